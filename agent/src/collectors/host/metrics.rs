//! Host families with node_exporter's names, labels and units.
use super::{DiskIo, Filesystem, HostSample, NetDevice};
use crate::base::family::{family, sample, series, MetricFamily, MetricType};

/// (name or name part, help, value) of a family per item.
type Field<T, V> = (&'static str, &'static str, fn(&T) -> V);

pub(super) fn families(h: &HostSample, out: &mut Vec<MetricFamily>) {
    let cpu: Vec<_> = h
        .cpus
        .iter()
        .flat_map(|c| {
            let cpu = c.cpu.to_string();
            c.modes
                .iter()
                .map(move |(mode, v)| (cpu.clone(), *mode, *v))
        })
        .collect();
    out.push(family(
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
        MetricType::COUNTER,
        cpu.iter()
            .map(|(c, m, v)| sample(MetricType::COUNTER, &[("cpu", c), ("mode", m)], *v))
            .collect(),
    ));
    if let Some(m) = &h.memory {
        for (field, v) in &m.fields {
            out.push(family(
                &format!("node_memory_{field}_bytes"),
                &format!("Memory information field {field}_bytes."),
                MetricType::GAUGE,
                vec![sample(MetricType::GAUGE, &[], *v as f64)],
            ));
        }
    }
    if let Some([l1, l5, l15]) = h.load {
        for (name, v) in [("node_load1", l1), ("node_load5", l5), ("node_load15", l15)] {
            out.push(family(
                name,
                "Load average.",
                MetricType::GAUGE,
                vec![sample(MetricType::GAUGE, &[], v)],
            ));
        }
    }
    if let Some(b) = h.boot_time_seconds {
        out.push(family(
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            MetricType::GAUGE,
            vec![sample(MetricType::GAUGE, &[], b as f64)],
        ));
    }
    let fs_labels = |f: &Filesystem| {
        vec![
            ("device", f.device.clone()),
            ("fstype", f.fstype.clone()),
            ("mountpoint", f.mountpoint.clone()),
        ]
    };
    let fs: [Field<Filesystem, f64>; 6] = [
        (
            "node_filesystem_size_bytes",
            "Filesystem size in bytes.",
            |f| f.size_bytes as f64,
        ),
        (
            "node_filesystem_free_bytes",
            "Filesystem free space in bytes.",
            |f| f.free_bytes as f64,
        ),
        (
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
            |f| f.avail_bytes as f64,
        ),
        (
            "node_filesystem_files",
            "Filesystem total file nodes.",
            |f| f.files as f64,
        ),
        (
            "node_filesystem_files_free",
            "Filesystem total free file nodes.",
            |f| f.files_free as f64,
        ),
        (
            "node_filesystem_readonly",
            "Filesystem read-only status.",
            |f| f64::from(u8::from(f.readonly)),
        ),
    ];
    for (name, help, value) in fs {
        out.push(series(
            name,
            help,
            MetricType::GAUGE,
            &h.filesystems,
            fs_labels,
            |f| Some(value(f)),
        ));
    }
    let net: [Field<NetDevice, u64>; 8] = [
        ("receive_bytes", "bytes received", |n| n.receive_bytes),
        ("transmit_bytes", "bytes transmitted", |n| n.transmit_bytes),
        ("receive_packets", "packets received", |n| n.receive_packets),
        ("transmit_packets", "packets transmitted", |n| {
            n.transmit_packets
        }),
        ("receive_errs", "receive errors", |n| n.receive_errs),
        ("transmit_errs", "transmit errors", |n| n.transmit_errs),
        ("receive_drop", "received packets dropped", |n| {
            n.receive_drop
        }),
        ("transmit_drop", "transmitted packets dropped", |n| {
            n.transmit_drop
        }),
    ];
    for (name, what, value) in net {
        out.push(series(
            &format!("node_network_{name}_total"),
            &format!("Network device statistic: {what}."),
            MetricType::COUNTER,
            &h.network,
            |n| vec![("device", n.device.clone())],
            |n| Some(value(n) as f64),
        ));
    }
    let disk: [Field<DiskIo, u64>; 4] = [
        (
            "node_disk_read_bytes_total",
            "The total number of bytes read successfully.",
            |d| d.read_bytes,
        ),
        (
            "node_disk_written_bytes_total",
            "The total number of bytes written successfully.",
            |d| d.written_bytes,
        ),
        (
            "node_disk_reads_completed_total",
            "The total number of reads completed successfully.",
            |d| d.reads_completed,
        ),
        (
            "node_disk_writes_completed_total",
            "The total number of writes completed successfully.",
            |d| d.writes_completed,
        ),
    ];
    for (name, help, value) in disk {
        out.push(series(
            name,
            help,
            MetricType::COUNTER,
            &h.disks,
            |d| vec![("device", d.device.clone())],
            |d| Some(value(d) as f64),
        ));
    }
    for p in &h.pressure {
        out.push(family(
            &format!("node_pressure_{}_seconds_total", p.name),
            "Total time tasks were stalled on this resource (pressure stall information).",
            MetricType::COUNTER,
            vec![sample(MetricType::COUNTER, &[], p.seconds)],
        ));
    }
}
