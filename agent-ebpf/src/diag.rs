//! Rare diagnostics of the kernel programs (a map full, an unexpected state), sent as
//! aya-log records that the agent reads into its log. Each cause is logged once, until
//! userspace clears its flag (it does so periodically: a lasting cause is logged again
//! then, never per event). Never on a hot path: only where something already failed.
use agent_common::DIAG_CAUSES;
use aya_ebpf::{macros::map, maps::Array};

#[map]
static DIAG_ONCE: Array<u32> = Array::with_max_entries(DIAG_CAUSES, 0);

/// Whether `cause` is to be logged now (and mark it logged).
#[inline(always)]
pub fn first(cause: u32) -> bool {
    let Some(flag) = DIAG_ONCE.get_ptr_mut(cause) else {
        return false;
    };
    // SAFETY: `flag` points into the array map's value. Two CPUs racing may both log
    // once; that is fine for a diagnostic.
    unsafe {
        if *flag != 0 {
            return false;
        }
        *flag = 1;
    }
    true
}
