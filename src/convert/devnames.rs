//! Rewriting the disk device names a guest config uses (`/dev/sda1`,
//! `/dev/hdb2`, `/dev/xvda1`, `/dev/cciss/c0d0p1`) into names that survive
//! the move to virtio: `UUID=…` where the syntax accepts it, else `/dev/vdX`.

use crate::guest::inspect::spec::parse_disk_device;

/// What a device name becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewName {
    /// The filesystem (or swap) UUID on that device, when it has one.
    pub uuid: Option<String>,
    /// The device's name on virtio ("/dev/vda1").
    pub virtio: String,
}

/// Which syntax a file uses, so a replacement stays valid there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// fstab: the first field is a spec (`UUID=` allowed).
    Fstab,
    /// crypttab: the second field is a spec.
    Crypttab,
    /// Kernel command lines and bootloader configs: `root=`/`resume=` values accept `UUID=`.
    Cmdline,
    /// Anything else (device.map, scripts): plain device paths only.
    Plain,
}

/// One change made to a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// 1-based line number.
    pub line: usize,
    /// The old device name.
    pub from: String,
    /// What replaced it.
    pub to: String,
}

/// The virtio name of a device: disk index `d`, partition `p`.
pub fn virtio_name(disk: usize, part: Option<u32>) -> String {
    let mut s = crate::volume::disk_name("/dev/vd", disk);
    if let Some(p) = part {
        s.push_str(&p.to_string());
    }
    s
}

/// Length of the device token at the start of `s`, if one is there:
/// `/dev/` + sd|hd|xvd + letters + optional digits, or cciss/cXdY[pZ].
fn token_len(s: &str) -> Option<usize> {
    let rest = s.strip_prefix("/dev/")?;
    let body = if let Some(r) = rest.strip_prefix("cciss/c") {
        let n = r
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == 'd' || *c == 'p'))
            .map_or(r.len(), |(i, _)| i);
        "cciss/c".len() + n
    } else {
        let prefix = ["xvd", "sd", "hd"].iter().find(|p| rest.starts_with(**p))?;
        let after = &rest[prefix.len()..];
        let letters = after.chars().take_while(|c| c.is_ascii_lowercase()).count();
        if letters == 0 || letters > 3 {
            return None;
        }
        let digits = after[letters..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .count();
        prefix.len() + letters + digits
    };
    let len = "/dev/".len() + body;
    // The token must end at a word boundary.
    match s[len..].chars().next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '/' || c == '-' => None,
        _ => Some(len),
    }
}

/// Rewrites every disk device name in `text` using `lookup`, which maps an old
/// device path to its new name (None = leave it alone). Returns the new text
/// and the list of changes.
pub fn rewrite(
    text: &str,
    syntax: Syntax,
    lookup: &dyn Fn(&str) -> Option<NewName>,
) -> (String, Vec<Rewrite>) {
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            out.push_str(line);
            continue;
        }
        let spec_field = match syntax {
            Syntax::Fstab => Some(0),
            Syntax::Crypttab => Some(1),
            _ => None,
        };
        let mut i = 0;
        let mut field = 0usize;
        let mut in_space = true;
        let bytes = line.as_bytes();
        while i < line.len() {
            let c = bytes[i];
            if c == b' ' || c == b'\t' {
                if !in_space {
                    field += 1;
                }
                in_space = true;
                out.push(c as char);
                i += 1;
                continue;
            }
            let at_field_start = in_space;
            in_space = false;
            if c == b'/' {
                let prev_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'/');
                if let (true, Some(len)) = (prev_ok, token_len(&line[i..])) {
                    let dev = &line[i..i + len];
                    if let Some(new) = lookup(dev) {
                        let after_eq = i > 0 && bytes[i - 1] == b'=';
                        let spec_pos = at_field_start && spec_field == Some(field);
                        let uuid_ok =
                            spec_pos || (syntax != Syntax::Plain && after_eq && syntax == Syntax::Cmdline);
                        let to = match (&new.uuid, uuid_ok) {
                            (Some(u), true) => format!("UUID={u}"),
                            _ => new.virtio.clone(),
                        };
                        changes.push(Rewrite {
                            line: n + 1,
                            from: dev.to_string(),
                            to: to.clone(),
                        });
                        out.push_str(&to);
                        i += len;
                        continue;
                    }
                }
            }
            let ch = line[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    (out, changes)
}

/// A lookup for [`rewrite`] built from a function that resolves a disk and
/// partition number to the UUID it holds.
pub fn lookup_by_position(
    uuid_of: impl Fn(usize, Option<u32>) -> Option<String>,
) -> impl Fn(&str) -> Option<NewName> {
    move |dev: &str| {
        let (_, disk, part) = parse_disk_device(dev)?;
        Some(NewName {
            uuid: uuid_of(disk, part),
            virtio: virtio_name(disk, part),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup() -> impl Fn(&str) -> Option<NewName> {
        lookup_by_position(|d, p| match (d, p) {
            (0, Some(1)) => Some("1111-root".into()),
            (0, Some(2)) => Some("2222-swap".into()),
            _ => None,
        })
    }

    #[test]
    fn fstab_specs_become_uuids() {
        let text = "# /dev/sda1 was root\n/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sda2 none swap sw 0 0\n/dev/sdb1 /data xfs defaults 0 2\nUUID=abc /home ext4 defaults 0 2\n";
        let (out, ch) = rewrite(text, Syntax::Fstab, &lookup());
        assert_eq!(
            out,
            "# /dev/sda1 was root\nUUID=1111-root / ext4 errors=remount-ro 0 1\nUUID=2222-swap none swap sw 0 0\n/dev/vdb1 /data xfs defaults 0 2\nUUID=abc /home ext4 defaults 0 2\n"
        );
        assert_eq!(ch.len(), 3);
        assert_eq!(
            ch[0],
            Rewrite {
                line: 2,
                from: "/dev/sda1".into(),
                to: "UUID=1111-root".into()
            }
        );
    }

    #[test]
    fn cmdline_root_and_resume() {
        let text = "\tlinux\t/boot/vmlinuz-6.1 root=/dev/sda1 ro resume=/dev/sda2 quiet\n";
        let (out, _) = rewrite(text, Syntax::Cmdline, &lookup());
        assert_eq!(
            out,
            "\tlinux\t/boot/vmlinuz-6.1 root=UUID=1111-root ro resume=UUID=2222-swap quiet\n"
        );
        let (out, _) = rewrite(
            "GRUB_CMDLINE_LINUX=\"root=/dev/hda1\"\n",
            Syntax::Cmdline,
            &lookup(),
        );
        assert_eq!(out, "GRUB_CMDLINE_LINUX=\"root=UUID=1111-root\"\n");
    }

    #[test]
    fn plain_files_get_virtio_names_and_lookalikes_stay() {
        let (out, _) = rewrite("(hd0) /dev/sda\n", Syntax::Plain, &lookup());
        assert_eq!(out, "(hd0) /dev/vda\n");
        let text = "/dev/sdcard /dev/sda1x /dev/disk/by-id/x /mnt/dev/sda1 /dev/sda-1\n";
        let (out, ch) = rewrite(text, Syntax::Plain, &lookup());
        assert_eq!(out, text);
        assert!(ch.is_empty());
        let (out, _) = rewrite("x /dev/xvdb2 /dev/cciss/c0d0p1\n", Syntax::Plain, &lookup());
        assert_eq!(out, "x /dev/vdb2 /dev/vda1\n");
    }

    #[test]
    fn crypttab_second_field() {
        let (out, _) = rewrite("cr /dev/sda2 none luks\n", Syntax::Crypttab, &lookup());
        assert_eq!(out, "cr UUID=2222-swap none luks\n");
    }
}
