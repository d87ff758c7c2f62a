//! The shim protocol (one JSON object per line over the shim's socket): a line as the shim reads
//! it (`serde_json::from_slice::<Request>`) and as the server reads it
//! (`serde_json::from_str::<FromShim>`). What decodes must encode to a line that decodes to the
//! same message, on one line (the framing is the newline).
#![no_main]

use cloudlet_shim::proto::{FromShim, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let line = serde_json::to_string(&request).expect("a request encodes");
        assert!(
            !line.contains('\n'),
            "an encoded request spans lines: {line}"
        );
        let back: Request = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("an encoded request does not decode: {e}\n{line}"));
        assert_eq!(back, request, "{line}");
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(message) = serde_json::from_str::<FromShim>(text)
    {
        let line = serde_json::to_string(&message).expect("a message encodes");
        assert!(
            !line.contains('\n'),
            "an encoded message spans lines: {line}"
        );
        let back: FromShim = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("an encoded message does not decode: {e}\n{line}"));
        assert_eq!(back, message, "{line}");
    }
});
