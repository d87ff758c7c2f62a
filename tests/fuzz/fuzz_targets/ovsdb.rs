//! The OVSDB client's receive path (RFC 7047 JSON-RPC over a stream with no delimiters): the
//! bytes a server sends, cut into reads at places the input picks, through the framing decoder,
//! the JSON-RPC parser and the decoders of table updates, transaction results and schemas; the
//! updates then go into the `Open_vSwitch` state the bridge reconciler keeps.
//!
//! Where the reads are cut must not change what is decoded: one read of everything gives the
//! same result as many small ones.
#![no_main]

use cloudlet_netovs::ovsdb::vswitch::State;
use cloudlet_netovs::ovsdb::{MonitorEvent, SnapshotCause, decode_received};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let whole = decode_received(&[stream]);
    let reads: Vec<&[u8]> = stream.chunks(usize::from(cut % 64) + 1).collect();
    let pieces = decode_received(&reads);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "cutting the reads changed the updates"),
        (Err(_), Err(_)) => {}
        _ => panic!("cutting the reads changed the outcome: {whole:?} / {pieces:?}"),
    }
    let Ok(updates) = whole else {
        return;
    };
    let mut state = State::default();
    for (i, rows) in updates.into_iter().enumerate() {
        let event = if i == 0 {
            MonitorEvent::Snapshot {
                cause: SnapshotCause::Initial,
                rows,
            }
        } else {
            MonitorEvent::Update(rows)
        };
        if state.apply(&event).is_err() {
            // The reconciler reads the state again then.
            state = State::default();
        }
    }
});
