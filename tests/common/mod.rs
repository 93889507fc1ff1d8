//! Helpers shared by the integration tests: running reference tools (which
//! must exist: a missing oracle fails the test, it never skips it), the v2x
//! binary, and fixture generation.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Runs a reference tool and returns its output; panics if it cannot run.
pub fn tool(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("reference tool '{cmd}' could not run ({e}); install it (see README)"))
}

/// Runs a reference tool and insists on success.
pub fn tool_ok(cmd: &str, args: &[&str]) -> Output {
    let out = tool(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The v2x binary under test.
pub fn v2x() -> Command {
    Command::new(env!("CARGO_BIN_EXE_v2x"))
}

/// Runs v2x with `args`, returning its output.
pub fn run_v2x(args: &[&str]) -> Output {
    v2x().args(args).output().expect("running v2x")
}

/// Runs v2x and insists on success.
pub fn v2x_ok(args: &[&str]) -> Output {
    let out = run_v2x(args);
    assert!(
        out.status.success(),
        "v2x {args:?} failed ({:?}): {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh scratch directory under the target directory, removed when dropped.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// The fixtures made by `testdata/SCRIPT OUTDIR`. They are deterministic,
/// so each generator runs once into the target directory, keyed by the hash
/// of the generator (and the pattern script), and later runs reuse it.
pub fn fixtures(script: &str) -> PathBuf {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let gen = testdata.join(script);
    let mut key = sha256_file(&gen)[..16].to_string() + &sha256_file(&testdata.join("gen-pattern.py"))[..16];
    // A generator's companion directory (testdata/debian-guest/ for
    // gen-debian-guest.sh) is part of its input too.
    let stem = script
        .trim_start_matches("gen-")
        .trim_end_matches(".sh")
        .trim_end_matches(".py");
    let companion = testdata.join(stem);
    if companion.is_dir() {
        key += &sha256_tree(&companion)[..16];
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{script}-{key}"));
    if !dir.join("done").exists() {
        let tmp = scratch(&format!("{script}-new"));
        let shell = if script.ends_with(".sh") { "bash" } else { "sh" };
        tool_ok(shell, &[gen.to_str().unwrap(), tmp.path().to_str().unwrap()]);
        std::fs::write(tmp.path().join("done"), b"").unwrap();
        // Another test binary may have won the race; either copy is the same.
        if std::fs::rename(tmp.path(), &dir).is_err() {
            assert!(
                dir.join("done").exists(),
                "could not place fixtures at {}",
                dir.display()
            );
        }
    }
    dir
}

/// The fixtures of `testdata/gen-qcow2.sh`.
pub fn qcow2_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fixtures("gen-qcow2.sh"))
}

/// sha256 over the relative paths and contents of every file under `dir`, hex.
pub fn sha256_tree(dir: &Path) -> String {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.strip_prefix(dir).unwrap().to_string_lossy().as_bytes());
        h.update(sha256_file(&f).as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// sha256 of a file, hex.
pub fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(p).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// sha256 of every guest byte of `img`, read in 4 MiB pieces, hex.
pub fn image_sha256(img: &dyn v2x_formats::block::BlockSource) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut pos = 0;
    while pos < img.size() {
        let n = (img.size() - pos).min(buf.len() as u64) as usize;
        img.read_at(pos, &mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        pos += n as u64;
    }
    format!("{:x}", h.finalize())
}

/// The step ids of a `plan` JSON event, in order.
pub fn plan_step_ids(plan: &serde_json::Value) -> Vec<&str> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

/// `qemu-img convert -O FMT OPTS... SRC OUT`.
pub fn qemu_convert(src: &Path, out: &Path, fmt: &str, opts: &[&str]) {
    let mut args = vec!["convert", "-O", fmt];
    args.extend_from_slice(opts);
    args.extend([src.to_str().unwrap(), out.to_str().unwrap()]);
    tool_ok("qemu-img", &args);
}

/// `qemu-img convert -O raw` of `img`, the byte oracle.
pub fn qemu_raw(img: &Path, out: &Path) {
    qemu_convert(img, out, "raw", &[]);
}

/// Asserts two files have identical bytes (compares hashes to keep messages short).
pub fn assert_same_bytes(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::metadata(a).unwrap().len(),
        std::fs::metadata(b).unwrap().len(),
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
    assert_eq!(
        sha256_file(a),
        sha256_file(b),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// `qemu-img check` must report a clean image.
pub fn qemu_check(img: &Path) {
    let out = tool("qemu-img", &["check", img.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "qemu-img check {}: {text}", img.display());
    assert!(
        !text.contains("leaked") && !text.contains("ERROR"),
        "qemu-img check {}: {text}",
        img.display()
    );
}

/// `qemu-img compare` must say the images are equal.
pub fn qemu_compare(a: &Path, b: &Path) {
    tool_ok("qemu-img", &["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
}

/// Whether the slow tier (real Debian guest build, TCG boots) was asked for
/// with `V2X_SLOW_TESTS=1`. When it is, anything missing fails the test.
pub fn slow_tier() -> bool {
    match std::env::var("V2X_SLOW_TESTS") {
        Ok(v) if v == "1" => true,
        Ok(v) if v.is_empty() || v == "0" => false,
        Ok(v) => panic!("V2X_SLOW_TESTS must be 1 or 0, not {v:?}"),
        Err(_) => false,
    }
}

/// Two TCG boots at once on a small CI machine only make both slower.
static ONE_BOOT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs testdata/boot-test.sh on `image` with `firmware` ("bios" or "uefi",
/// fresh NVRAM) and the disk on `bus` ("virtio" or "sata"); boots of one
/// test binary run one at a time. With `log`, the console is kept there.
pub fn boot_test(image: &Path, format: &str, bus: &str, firmware: &str, log: Option<&Path>) -> Output {
    let _guard = ONE_BOOT_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/boot-test.sh");
    let mut cmd = Command::new("bash");
    cmd.args([
        script.to_str().unwrap(),
        image.to_str().unwrap(),
        format,
        bus,
        "1500",
    ]);
    cmd.env("V2X_BOOT_FIRMWARE", firmware);
    if let Some(log) = log {
        cmd.env("V2X_BOOT_LOG", log);
        cmd.env("V2X_BOOT_PCAP", log.with_extension("pcap"));
    }
    cmd.output().expect("running testdata/boot-test.sh")
}

/// True when the pcap file that [`boot_test`] wrote beside its console log
/// holds a DHCP request (BOOTREQUEST from UDP port 68 to 67 with the DHCP
/// magic cookie) sent by the guest: its network configuration, as converted,
/// brought the virtio NIC up.
pub fn guest_sent_dhcp_request(console_log: &Path) -> bool {
    let pcap = std::fs::read(console_log.with_extension("pcap")).unwrap_or_default();
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    // The file is written on the host in its byte order: little-endian here.
    if pcap.len() < 24 || pcap[..4] != [0xd4, 0xc3, 0xb2, 0xa1] {
        return false;
    }
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let Some(frame) = pcap.get(at + 16..at + 16 + len) else {
            break;
        };
        at += 16 + len;
        // Ethernet II carrying IPv4, then UDP.
        if frame.len() < 14 + 20 || be16(frame, 12) != 0x0800 || frame[14 + 9] != 17 {
            continue;
        }
        let udp = 14 + usize::from(frame[14] & 0x0f) * 4;
        let dhcp = udp + 8;
        if frame.len() < dhcp + 240 {
            continue;
        }
        if be16(frame, udp) == 68
            && be16(frame, udp + 2) == 67
            && frame[dhcp] == 1
            && frame[dhcp + 236..dhcp + 240] == [0x63, 0x82, 0x53, 0x63]
        {
            return true;
        }
    }
    false
}

/// stdout then stderr of a finished command, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The byte ranges (512-byte granularity, merged) where two raw images differ.
pub fn differing_ranges(a: &Path, b: &Path) -> Vec<(u64, u64)> {
    use std::io::Read;
    const CHUNK: usize = 512;
    let mut fa = std::fs::File::open(a).unwrap();
    let mut fb = std::fs::File::open(b).unwrap();
    assert_eq!(
        fa.metadata().unwrap().len(),
        fb.metadata().unwrap().len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0u64;
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        for (i, (ca, cb)) in ba[..n].chunks(CHUNK).zip(bb[..n].chunks(CHUNK)).enumerate() {
            if ca != cb {
                let start = pos + (i * CHUNK) as u64;
                match out.last_mut() {
                    Some((s, l)) if *s + *l == start => *l += ca.len() as u64,
                    _ => out.push((start, ca.len() as u64)),
                }
            }
        }
        pos += n as u64;
    }
    out
}

/// Which files of the ext4 filesystem at byte `offset` of raw image `img`
/// own the filesystem blocks in `ranges` (disk byte ranges inside it), as
/// debugfs's icheck and ncheck say. Blocks no inode owns (bitmaps, inode
/// tables, group descriptors, the superblock) are counted, not named.
/// Returns (paths, unowned block count).
pub fn ext4_owners(
    img: &Path,
    offset: u64,
    ranges: &[(u64, u64)],
) -> (std::collections::BTreeSet<String>, usize) {
    let dev = format!("{}?offset={offset}", img.display());
    let bs: u64 = String::from_utf8_lossy(&tool_ok("dumpe2fs", &["-h", &dev]).stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Block size:").map(|v| v.trim().parse().unwrap()))
        .expect("dumpe2fs block size");
    let mut blocks = Vec::new();
    for &(s, l) in ranges {
        let first = (s - offset) / bs;
        let last = (s + l - 1 - offset) / bs;
        blocks.extend(first..=last);
    }
    blocks.dedup();
    let mut inodes = std::collections::BTreeSet::new();
    let mut unowned = 0;
    for chunk in blocks.chunks(512) {
        let cmd = format!(
            "icheck {}",
            chunk.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" ")
        );
        let out = tool_ok("debugfs", &["-R", &cmd, &dev]);
        for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.get(1) {
                Some(ino) if ino.parse::<u64>().is_ok() => {
                    inodes.insert(ino.to_string());
                }
                _ => unowned += 1,
            }
        }
    }
    let mut paths = std::collections::BTreeSet::new();
    if !inodes.is_empty() {
        let cmd = format!("ncheck {}", inodes.iter().cloned().collect::<Vec<_>>().join(" "));
        let out = tool_ok("debugfs", &["-R", &cmd, &dev]);
        for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
            if let Some((_, p)) = line.split_once('\t').or_else(|| line.split_once(' ')) {
                let p = format!("/{}", p.trim().trim_start_matches('/'));
                paths.insert(p);
            }
        }
        // The root directory (inode 2) has no name in ncheck's output.
        if inodes.contains("2") {
            paths.insert("/".into());
        }
    }
    (paths, unowned)
}

/// The guest paths a `v2x convert --json` run's `plan` event lists.
pub fn plan_paths(json_stdout: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(json_stdout);
    let plan: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "plan")
        .unwrap_or_else(|| panic!("no plan event in:\n{text}"));
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["edits"].as_array().unwrap().iter())
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts that every file owning a changed block of the ext4 filesystem
/// at `offset` is a planned path, or a directory holding one (whose entries
/// changed), with the guest path prefix `mount` ("/" for the root).
pub fn assert_only_planned_changes(
    src_raw: &Path,
    out_raw: &Path,
    offset: u64,
    len: u64,
    mount: &str,
    planned: &[String],
) {
    let diffs: Vec<(u64, u64)> = differing_ranges(src_raw, out_raw)
        .into_iter()
        .filter(|&(s, l)| s < offset + len && s + l > offset)
        .collect();
    assert!(
        !diffs.is_empty(),
        "the conversion changed nothing in the filesystem at {offset}"
    );
    let (paths, _unowned) = ext4_owners(out_raw, offset, &diffs);
    let mut allowed = std::collections::BTreeSet::new();
    for p in planned {
        let mut cur = p.as_str();
        allowed.insert(cur.to_string());
        while let Some((parent, _)) = cur.rsplit_once('/') {
            allowed.insert(if parent.is_empty() {
                "/".into()
            } else {
                parent.to_string()
            });
            cur = parent;
        }
    }
    for p in &paths {
        let guest = if mount == "/" {
            p.clone()
        } else if p == "/" {
            mount.to_string()
        } else {
            format!("{mount}{p}")
        };
        assert!(
            allowed.contains(&guest),
            "block of {guest} changed, but the plan does not list it: {planned:?}"
        );
    }
}

/// Compares `text` with the golden file `file`; `V2X_UPDATE_GOLDEN=1` rewrites it.
pub fn assert_golden(file: &Path, text: &str) {
    if std::env::var_os("V2X_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    let want = std::fs::read_to_string(file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with V2X_UPDATE_GOLDEN=1 to create it",
            file.display()
        )
    });
    assert_eq!(
        text,
        want,
        "output differs from {}; if the change is deliberate, rerun with V2X_UPDATE_GOLDEN=1 and review the diff",
        file.display()
    );
}

/// Checks a parse result against `<dir>/<name>.txt` (render, or the error) and,
/// on success, `<dir>/<name>.json`. `prefix` (a directory) is shown as `label`.
pub fn check_vm_golden(
    dir: &Path,
    name: &str,
    got: v2x_formats::Result<v2x::vm::VmSpec>,
    prefix: &str,
    label: &str,
) {
    let mask = |s: String| {
        if prefix.is_empty() {
            s
        } else {
            s.replace(prefix, label)
        }
    };
    match got {
        Ok(spec) => {
            assert_golden(&dir.join(format!("{name}.txt")), &mask(spec.render()));
            let json = serde_json::to_string_pretty(&spec).unwrap() + "\n";
            assert_golden(&dir.join(format!("{name}.json")), &mask(json));
            let _ = std::fs::remove_file(dir.join(format!("{name}.error")));
        }
        Err(e) => {
            let text = format!("{e}\n");
            assert_golden(&dir.join(format!("{name}.error")), &mask(text));
        }
    }
}

/// The serial console carries colour and cursor escapes (`ESC [ ... letter`)
/// between words systemd prints; assertions read the plain text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// systemd shortens long unit names on the status line, so the unit is
/// recognised by its full name (kernel log) or its description.
pub fn firstboot_started(console: &str) -> bool {
    console.contains("v2x-firstboot.service") || console.contains("v2x first-boot scripts")
}
