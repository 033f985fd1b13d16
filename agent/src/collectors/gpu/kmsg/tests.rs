use super::*;

fn pci(s: &str) -> PciAddr {
    PciAddr::parse(s).unwrap()
}

#[test]
fn the_drivers_lines_are_read_as_it_prints_them() {
    let b3 = pci("0000:3b:00.0");
    for (record, want) in [
        (
            "3,1042,5123456789,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.\n",
            vec![
                NvrmEvent::Xid { pci: b3, code: 79 },
                NvrmEvent::FellOffBus { pci: b3 },
            ],
        ),
        (
            "4,1043,5123456790,-;NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.\n SUBSYSTEM=pci\n DEVICE=+pci:0000:3b:00.0\n",
            vec![NvrmEvent::Xid { pci: b3, code: 48 }],
        ),
        (
            "4,7,1,-;NVRM: Xid (PCI:0000:cb:00): 13, pid=4242, name=python3, Graphics SM Warp Exception on (GPC 7, TPC 1, SM 0): Out Of Range Address",
            vec![NvrmEvent::Xid { pci: pci("0000:cb:00"), code: 13 }],
        ),
        // Older drivers leave out "PCI:".
        (
            "4,8,1,-;NVRM: Xid (0000:01:00): 31, pid=7, Ch 00000010, intr 10000000. MMU Fault",
            vec![NvrmEvent::Xid { pci: pci("0000:01:00"), code: 31 }],
        ),
        (
            "3,9,1,-;NVRM: GPU 0000:2b:00.0: GPU has fallen off the bus.",
            vec![NvrmEvent::FellOffBus { pci: pci("0000:2b:00.0") }],
        ),
        (
            "3,10,1,-;NVRM: GPU at 0000:01:00.0 has fallen off the bus.",
            vec![NvrmEvent::FellOffBus { pci: pci("0000:01:00.0") }],
        ),
    ] {
        assert_eq!(parse(record), want, "{record}");
    }
}

#[test]
fn other_lines_say_nothing() {
    for record in [
        "6,1,1,-;NVRM: GPU at PCI:0000:3b:00: GPU-0b11d014-1685-04bd-26ed-5fc0bc1c44ae",
        "6,2,1,-;NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15",
        "6,3,1,-;Xid (PCI:0000:3b:00): 79, not from the driver",
        "6,4,1,-;NVRM: Xid (PCI:0000:3b:00): seventy-nine",
        "6,5,1,-;usb 1-1: new high-speed USB device",
        "",
    ] {
        assert_eq!(parse(record), Vec::new(), "{record}");
    }
}
