//! CUDA driver call families (`infersight_cuda_*`), per target.
use super::{CudaErrorSeries, CudaPart, CudaSeries};
use crate::base::family::{family, log2_histogram, series, MetricFamily, MetricType};

pub(super) fn families(part: &CudaPart, out: &mut Vec<MetricFamily>) {
    let label = |c: &CudaSeries| vec![("target", c.target.clone())];
    type Field = fn(&CudaSeries) -> u64;
    let counters: [(&str, &str, Field); 5] = [
        (
            "infersight_cuda_kernel_launches_total",
            "cuLaunchKernel(Ex) calls.",
            |c| c.kernel_launches,
        ),
        (
            "infersight_cuda_graph_launches_total",
            "cuGraphLaunch calls.",
            |c| c.graph_launches,
        ),
        (
            "infersight_cuda_memory_allocations_total",
            "cuMemAlloc_v2 and cuMemAllocAsync calls.",
            |c| c.allocs,
        ),
        (
            "infersight_cuda_memory_allocated_bytes_total",
            "Bytes requested from cuMemAlloc_v2 and cuMemAllocAsync.",
            |c| c.alloc_bytes,
        ),
        (
            "infersight_cuda_memory_frees_total",
            "cuMemFree_v2 and cuMemFreeAsync calls.",
            |c| c.frees,
        ),
    ];
    for (name, help, value) in counters {
        out.push(series(
            name,
            help,
            MetricType::COUNTER,
            &part.cuda,
            label,
            |c| Some(value(c) as f64),
        ));
    }
    let copies: Vec<(&str, &str, u64, u64)> = part
        .cuda
        .iter()
        .flat_map(|c| {
            c.memcpy
                .iter()
                .map(move |(k, n, b)| (c.target.as_str(), *k, *n, *b))
        })
        .collect();
    let copy_label = |(t, k, _, _): &(&str, &str, u64, u64)| {
        vec![("kind", k.to_string()), ("target", t.to_string())]
    };
    out.push(series(
        "infersight_cuda_memcpy_total",
        "cuMemcpy* calls by direction (htod, dtoh, dtod; any: cuMemcpy/cuMemcpyAsync).",
        MetricType::COUNTER,
        &copies,
        copy_label,
        |(_, _, n, _)| Some(*n as f64),
    ));
    out.push(series(
        "infersight_cuda_memcpy_bytes_total",
        "Bytes copied by cuMemcpy* calls, by direction.",
        MetricType::COUNTER,
        &copies,
        copy_label,
        |(_, _, _, b)| Some(*b as f64),
    ));
    out.push(series(
        "infersight_cuda_errors_total",
        "Error returns of the allocation calls (cuMemAlloc_v2, cuMemAllocManaged, cuMemCreate, \
         cuMemAllocAsync; _ptsz under its base name), by call and CUresult name.",
        MetricType::COUNTER,
        &part.cuda_errors,
        |e: &CudaErrorSeries| {
            vec![
                ("call", e.call.to_string()),
                ("error", e.error.clone()),
                ("target", e.target.clone()),
            ]
        },
        |e| Some(e.count as f64),
    ));
    out.push(series(
        "infersight_cuda_last_kernel_launch_timestamp_seconds",
        "When the target last launched a kernel or a CUDA graph (Unix seconds).",
        MetricType::GAUGE,
        &part.cuda,
        label,
        |c| c.last_launch_seconds,
    ));
    out.push(family(
        "infersight_cuda_sync_duration_seconds",
        "Time spent in cuCtxSynchronize and cuStreamSynchronize (log2 buckets).",
        MetricType::HISTOGRAM,
        part.cuda
            .iter()
            .map(|c| {
                log2_histogram(
                    &[("target", c.target.as_str())],
                    &c.sync_buckets,
                    c.sync_sum_seconds,
                )
            })
            .collect(),
    ));
}
