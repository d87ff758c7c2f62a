//! Whether the kernel considers the system clock synchronized (by NTP, chrony, timesyncd, PTP):
//! one read-only `adjtimex(2)`. It must never adjust the clock: the call passes `modes = 0`.

use nix::errno::Errno;
use nix::libc;

/// The kernel's estimate of the clock's maximum error, in microseconds (`timex.maxerror`).
/// A daemon that disciplines the clock keeps it small; the kernel grows it by 500 ppm while no
/// one does, and stops at 16 s ([`UNSYNCHRONIZED_US`]).
// `c_long` is i64 on 64-bit Linux, i32 on 32-bit: the conversion is an identity here only.
#[allow(clippy::useless_conversion)]
pub(crate) fn max_error_us() -> Result<i64, Errno> {
    // SAFETY: `timex` is plain integers, for which all-zero bytes are valid; `modes = 0` makes
    // adjtimex read-only, and the kernel only writes into the struct we own for the call.
    let (res, tx) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let res = libc::adjtimex(&mut tx);
        (res, tx)
    };
    Errno::result(res)?;
    Ok(i64::from(tx.maxerror))
}

/// The maximum error the kernel reports for a clock nobody disciplines (`NTP_PHASE_LIMIT`).
/// systemd's `NTPSynchronized` is `maxerror < 16 s`; it ignores `STA_UNSYNC`, which daemons
/// also set to keep the kernel from writing the RTC. We do the same.
pub(crate) const UNSYNCHRONIZED_US: i64 = 16_000_000;
