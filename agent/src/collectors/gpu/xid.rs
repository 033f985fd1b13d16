//! What an XID code means and what to do about it, from NVIDIA's XID catalog
//! (docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html: the description and the
//! "Resolution Bucket (Immediate Action)" column), for the codes an inference host meets.

/// The operator's next step. Labels are the catalog's immediate actions, lower-cased;
/// `reset_gpu` and `reboot_node` need the GPU or the node taken out of service (the
/// `GpuXidNeedsReset` rule).
pub mod action {
    /// Informational; nothing to do (catalog: IGNORE).
    pub const NONE: &str = "none";
    /// The application's context is gone: restart it (RESTART_APP).
    pub const RESTART_APP: &str = "restart_app";
    /// Drain the GPU's work and reset it (RESET_GPU; the XID 48 workflow).
    pub const RESET_GPU: &str = "reset_gpu";
    /// Drain the node and reboot it (RESTART_BM).
    pub const REBOOT_NODE: &str = "reboot_node";
    /// Caused by an earlier error: act on that XID (WORKFLOW_XID_45).
    pub const FOLLOW_OTHER_XID: &str = "follow_other_xid";
    /// Check the NVLink error counters; reset if they keep rising (WORKFLOW_NVLINK_ERR).
    pub const CHECK_NVLINK: &str = "check_nvlink";
    /// The new recovery action is in the driver's message (XID_154).
    pub const SEE_RECOVERY_ACTION: &str = "see_recovery_action";
    /// Power cables or seating (CHECK_MECHANICALS).
    pub const CHECK_MECHANICALS: &str = "check_mechanicals";
    pub const CONTACT_SUPPORT: &str = "contact_support";
    /// Not in this table: look the code up in the catalog.
    pub const UNKNOWN: &str = "unknown";
}

/// (code, name, action).
const CATALOG: &[(u64, &str, &str)] = &[
    (8, "GPU stopped processing", action::RESTART_APP),
    (13, "Graphics engine exception", action::RESTART_APP),
    (31, "GPU memory page fault", action::RESTART_APP),
    (
        32,
        "Invalid or corrupted push buffer stream",
        action::RESTART_APP,
    ),
    (43, "GPU stopped processing", action::NONE),
    (
        45,
        "Preemptive cleanup after previous errors",
        action::FOLLOW_OTHER_XID,
    ),
    (46, "GPU stopped processing (timeout)", action::RESET_GPU),
    (48, "Double bit ECC error", action::RESET_GPU),
    (
        54,
        "Auxiliary power is not connected",
        action::CHECK_MECHANICALS,
    ),
    (
        61,
        "Internal micro-controller breakpoint",
        action::CONTACT_SUPPORT,
    ),
    (62, "Internal micro-controller halt", action::RESET_GPU),
    (
        63,
        "Memory remapping or page retirement event",
        action::NONE,
    ),
    (
        64,
        "Memory remapping or page retirement failure",
        action::RESET_GPU,
    ),
    (68, "NVDEC0 exception", action::RESTART_APP),
    (69, "Graphics engine class error", action::RESTART_APP),
    (74, "NVLink error", action::CHECK_NVLINK),
    (79, "GPU has fallen off the bus", action::REBOOT_NODE),
    (92, "High single-bit ECC error rate", action::NONE),
    (93, "InfoROM erase limit exceeded", action::NONE),
    (94, "Contained memory error", action::RESTART_APP),
    (95, "Uncontained memory error", action::RESET_GPU),
    (119, "GSP RPC timeout", action::RESET_GPU),
    (120, "GSP error", action::RESET_GPU),
    (136, "Link training failed", action::RESET_GPU),
    (140, "Unrecovered ECC error", action::RESET_GPU),
    (143, "GPU initialization error", action::RESET_GPU),
    (
        154,
        "GPU recovery action changed",
        action::SEE_RECOVERY_ACTION,
    ),
    (155, "NVLink software-defined error", action::RESET_GPU),
    (156, "Resource retirement event", action::RESET_GPU),
    (158, "GPU fatal timeout", action::RESET_GPU),
];

/// The name and action of `code` (`unknown` for codes not in the table).
pub fn decode(code: u64) -> (&'static str, &'static str) {
    CATALOG
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(("unknown", action::UNKNOWN), |(_, n, a)| (*n, *a))
}

#[cfg(test)]
mod tests;
