use super::*;

const DEBIAN_GRUB: &str = r#"
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  fi
}
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
else
   set default="0"
fi
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux $menuentry_id_option 'gnulinux-simple-1234' {
	load_video
	linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=1234 ro  quiet
	initrd	/boot/initrd.img-6.1.0-18-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-1234' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-18-amd64-advanced-1234' {
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=1234 ro  quiet
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-17-amd64 (recovery mode)' {
		linux	/boot/vmlinuz-6.1.0-17-amd64 root=UUID=1234 ro single
		initrd	/boot/initrd.img-6.1.0-17-amd64
	}
}
menuentry "UEFI Firmware Settings" --id 'uefi-firmware' {
	fwsetup
}
"#;

#[test]
fn grub_words_quotes() {
    assert_eq!(
        grub_words(r#"menuentry 'a b' "c \"d\"" e\ f $x # comment"#),
        ["menuentry", "a b", "c \"d\"", "e f", "$x"]
    );
}

#[test]
fn grub_cfg_tree_and_defaults() {
    let cfg = parse_grub_cfg(DEBIAN_GRUB);
    assert_eq!(cfg.defaults, ["${next_entry}", "0"]);
    assert!(!cfg.uses_bls);
    assert_eq!(cfg.menu.items.len(), 3);
    let mut flat = Vec::new();
    flatten(&cfg.menu, None, &mut flat);
    assert_eq!(flat.len(), 4);
    assert_eq!(flat[0].title, "Debian GNU/Linux");
    assert_eq!(flat[0].id.as_deref(), Some("gnulinux-simple-1234"));
    assert_eq!(flat[0].kernel.as_deref(), Some("/boot/vmlinuz-6.1.0-18-amd64"));
    assert_eq!(flat[0].cmdline.as_deref(), Some("root=UUID=1234 ro quiet"));
    assert_eq!(flat[0].initrd.as_deref(), Some("/boot/initrd.img-6.1.0-18-amd64"));
    assert_eq!(
        flat[2].submenu.as_deref(),
        Some("Advanced options for Debian GNU/Linux")
    );
    assert_eq!(flat[3].id.as_deref(), Some("uefi-firmware"));
    let m = &cfg.menu;
    assert_eq!(resolve_grub_default(m, "0").unwrap().title, "Debian GNU/Linux");
    assert_eq!(
        resolve_grub_default(m, "1>1").unwrap().kernel.as_deref(),
        Some("/boot/vmlinuz-6.1.0-17-amd64")
    );
    assert_eq!(
        resolve_grub_default(m, "gnulinux-advanced-1234>gnulinux-6.1.0-18-amd64-advanced-1234")
            .unwrap()
            .title,
        "Debian GNU/Linux, with Linux 6.1.0-18-amd64"
    );
    assert_eq!(
        resolve_grub_default(m, "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-17-amd64 (recovery mode)")
            .unwrap()
            .cmdline
            .as_deref(),
        Some("root=UUID=1234 ro single")
    );
    assert!(resolve_grub_default(m, "1").is_none());
    assert!(resolve_grub_default(m, "7").is_none());
}

#[test]
fn menu_depth_is_bounded() {
    let mut t = String::new();
    for _ in 0..100 {
        t.push_str("submenu 'x' {\n");
    }
    t.push_str("menuentry 'deep' {\nlinux /k\n}\n");
    for _ in 0..100 {
        t.push_str("}\n");
    }
    let cfg = parse_grub_cfg(&t);
    let mut flat = Vec::new();
    flatten(&cfg.menu, None, &mut flat);
    assert_eq!(flat.len(), 1);
}

#[test]
fn bls_and_grubenv() {
    let e = parse_bls(
        "title Red Hat Enterprise Linux (5.14.0-362.8.1.el9_3.x86_64) 9.3 (Plow)\nversion 5.14.0-362.8.1.el9_3.x86_64\nlinux /vmlinuz-5.14.0-362.8.1.el9_3.x86_64\ninitrd /initramfs-5.14.0-362.8.1.el9_3.x86_64.img $tuned_initrd\noptions $kernelopts $tuned_params\ngrub_users $grub_users\n",
        "abc-5.14.0-362.8.1.el9_3.x86_64",
    );
    assert!(e.title.starts_with("Red Hat"));
    assert_eq!(e.kernel.as_deref(), Some("/vmlinuz-5.14.0-362.8.1.el9_3.x86_64"));
    assert_eq!(e.cmdline.as_deref(), Some("$kernelopts $tuned_params"));
    let env = parse_grubenv(
        "# GRUB Environment Block\nsaved_entry=abc\nkernelopts=root=/dev/mapper/rhel-root ro\n######\n",
    );
    assert_eq!(env["saved_entry"], "abc");
    assert_eq!(env["kernelopts"], "root=/dev/mapper/rhel-root ro");
}

#[test]
fn versions_sort_numerically() {
    assert_eq!(version_cmp("x-5.14.0-10", "x-5.14.0-9"), Ordering::Greater);
    assert_eq!(version_cmp("6.1", "6.1.0"), Ordering::Less);
    assert!(glob("debian-*", "debian-6.1.conf"));
    assert!(!glob("arch", "arch-lts"));
    assert!(glob("a?c*", "abcdef"));
}

#[test]
fn extlinux_alpine() {
    let (e, d) = parse_extlinux(
        "DEFAULT menu.c32\nPROMPT 0\nMENU TITLE Alpine/Linux Boot Menu\nTIMEOUT 10\nLABEL lts\n  MENU LABEL Linux lts\n  LINUX vmlinuz-lts\n  INITRD initramfs-lts\n  APPEND root=UUID=aa modules=sd-mod,ext4 quiet\nLABEL virt\n  KERNEL vmlinuz-virt\n  APPEND initrd=initramfs-virt root=/dev/vda3\n  MENU DEFAULT\n",
    );
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].title, "Linux lts");
    assert_eq!(e[0].kernel.as_deref(), Some("vmlinuz-lts"));
    assert_eq!(e[1].initrd.as_deref(), Some("initramfs-virt"));
    assert_eq!(d.as_deref(), Some("virt"));
}

#[test]
fn grub_legacy() {
    let (e, d) = parse_grub_legacy(
        "default=1\ntimeout=5\ntitle CentOS (2.6.32-754.el6.x86_64)\n\troot (hd0,0)\n\tkernel /vmlinuz-2.6.32-754.el6.x86_64 ro root=/dev/sda2\n\tinitrd /initramfs-2.6.32-754.el6.x86_64.img\ntitle Other\n\tkernel /vmlinuz-old ro\n",
    );
    assert_eq!(d.as_deref(), Some("1"));
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].cmdline.as_deref(), Some("ro root=/dev/sda2"));
    assert_eq!(e[1].kernel.as_deref(), Some("/vmlinuz-old"));
}
