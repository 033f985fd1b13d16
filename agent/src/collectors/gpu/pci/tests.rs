use super::*;

#[test]
fn every_spelling_is_one_address_written_as_nvml_does() {
    let want = "00000000:3B:00.0";
    for s in [
        "00000000:3B:00.0",
        "0000:3b:00.0",
        "PCI:0000:3b:00",
        "0000:3b:00",
    ] {
        assert_eq!(
            PciAddr::parse(s).map(|a| a.to_string()).as_deref(),
            Some(want),
            "{s}"
        );
    }
    for bad in [
        "",
        "3b:00",
        "0000:3b",
        "0000:3b:00:1",
        "0000:3bb:00",
        "zz:3b:00",
    ] {
        assert_eq!(PciAddr::parse(bad), None, "{bad}");
    }
}

#[test]
fn only_nvidia_display_devices_count() {
    let root = std::env::temp_dir().join(format!("infersight-pci-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (addr, vendor, class) in [
        ("0000:18:00.0", "0x10de", "0x030200"), // H100 (3D controller)
        ("0000:3b:00.0", "0x10de", "0x030000"), // VGA
        ("0000:3b:00.1", "0x10de", "0x040300"), // its HDMI audio
        ("0000:05:00.0", "0x10de", "0x068000"), // NVSwitch (bridge)
        ("0000:00:1f.0", "0x8086", "0x030000"), // Intel graphics
    ] {
        let d = root.join("bus/pci/devices").join(addr);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
        std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
    }
    assert_eq!(count_nvidia_gpus(&root), Some(2));
    assert_eq!(count_nvidia_gpus(&root.join("missing")), None);
    std::fs::remove_dir_all(&root).unwrap();
}
