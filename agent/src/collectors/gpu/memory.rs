//! Memory health: remapped rows (Ampere and later), ECC error counts and retired pages
//! (older GPUs), read in one NVML field-values call. Each field the GPU does not support
//! is absent.
use nvml_wrapper::{
    enums::device::SampleValue, structs::device::FieldId, sys_exports::field_id::*, Device,
};
use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryHealth {
    /// Rows remapped for correctable / uncorrectable errors.
    pub remapped_correctable: Option<u64>,
    pub remapped_uncorrectable: Option<u64>,
    /// A remapping waits for the next GPU reset (1) or not (0).
    pub remap_pending: Option<u64>,
    /// A row could not be remapped (1): the GPU needs service.
    pub remap_failure: Option<u64>,
    /// Single- and double-bit ECC errors since the driver loaded (volatile) and over the
    /// GPU's life (aggregate).
    pub ecc_sbe_volatile: Option<u64>,
    pub ecc_dbe_volatile: Option<u64>,
    pub ecc_sbe_aggregate: Option<u64>,
    pub ecc_dbe_aggregate: Option<u64>,
    /// Pages retired for single- / double-bit errors, and whether some wait for a reboot.
    pub retired_sbe: Option<u64>,
    pub retired_dbe: Option<u64>,
    pub retired_pending: Option<u64>,
}

type Slot = fn(&mut MemoryHealth) -> &mut Option<u64>;

/// Each NVML field and where its value goes.
const FIELDS: [(u32, Slot); 11] = [
    (NVML_FI_DEV_REMAPPED_COR, |m| &mut m.remapped_correctable),
    (NVML_FI_DEV_REMAPPED_UNC, |m| &mut m.remapped_uncorrectable),
    (NVML_FI_DEV_REMAPPED_PENDING, |m| &mut m.remap_pending),
    (NVML_FI_DEV_REMAPPED_FAILURE, |m| &mut m.remap_failure),
    (NVML_FI_DEV_ECC_SBE_VOL_TOTAL, |m| &mut m.ecc_sbe_volatile),
    (NVML_FI_DEV_ECC_DBE_VOL_TOTAL, |m| &mut m.ecc_dbe_volatile),
    (NVML_FI_DEV_ECC_SBE_AGG_TOTAL, |m| &mut m.ecc_sbe_aggregate),
    (NVML_FI_DEV_ECC_DBE_AGG_TOTAL, |m| &mut m.ecc_dbe_aggregate),
    (NVML_FI_DEV_RETIRED_SBE, |m| &mut m.retired_sbe),
    (NVML_FI_DEV_RETIRED_DBE, |m| &mut m.retired_dbe),
    (NVML_FI_DEV_RETIRED_PENDING, |m| &mut m.retired_pending),
];

/// The device's memory health; the call's error when NVML refused all of it.
pub fn read(dev: &Device<'_>) -> Result<MemoryHealth, nvml_wrapper::error::NvmlError> {
    let ids: Vec<FieldId> = FIELDS.iter().map(|(id, _)| FieldId(*id)).collect();
    let mut out = MemoryHealth::default();
    for sample in dev.field_values_for(&ids)?.into_iter().flatten() {
        let Some((_, slot)) = FIELDS.iter().find(|(id, _)| *id == sample.field.0) else {
            continue;
        };
        *slot(&mut out) = match sample.value {
            Ok(SampleValue::U32(v)) => Some(u64::from(v)),
            Ok(SampleValue::U64(v)) => Some(v),
            Ok(SampleValue::I64(v)) => u64::try_from(v).ok(),
            // Counts are integers; a double here would be a driver oddity, not a count.
            Ok(SampleValue::F64(_)) | Err(_) => None,
        };
    }
    Ok(out)
}
