//! The first-boot framework: work that needs the running guest (removing
//! the old hypervisor's packages, installing qemu-guest-agent) is left as
//! ordered shell scripts that a small runner executes once at the guest's
//! first boot on KVM. The runner is started by a systemd unit or, on guests
//! without systemd, a SysV init script. Nothing here runs a guest binary.
//!
//! In the guest:
//! - `/usr/local/lib/v2x/firstboot.sh`: the runner;
//! - `/usr/local/lib/v2x/firstboot.d/NN-name.sh`: the scripts, run in name
//!   order; a script that succeeds moves to `done/`, one that fails is tried
//!   again at the next boot, at most [`MAX_TRIES`] times;
//! - `/var/log/v2x-firstboot.log`: what they printed.
//!
//! Package-manager commands are data: `drivers-db/linux/package-managers.toml`.

use super::plan::{Edit, Step};
use crate::fs::guest::GuestRoot;
use serde::Deserialize;
use v2x_formats::Result;

const MANAGERS_TOML: &str = include_str!("../../drivers-db/linux/package-managers.toml");

/// Attempts per script before the runner gives up on it.
pub const MAX_TRIES: u32 = 3;

/// Where the runner and scripts live in the guest.
pub const DIR: &str = "/usr/local/lib/v2x";
/// The scripts directory.
pub const SCRIPTS: &str = "/usr/local/lib/v2x/firstboot.d";
const RUNNER: &str = "/usr/local/lib/v2x/firstboot.sh";
const UNIT: &str = "/etc/systemd/system/v2x-firstboot.service";
const WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";
const INIT_SCRIPT: &str = "/etc/init.d/v2x-firstboot";

/// One package manager's commands.
#[derive(Debug, Clone, Deserialize)]
pub struct PackageManager {
    /// Name as inspection reports it ("apt", "dnf", ...).
    pub manager: String,
    /// Refreshes the package lists (may be empty).
    pub refresh: String,
    /// Removes packages.
    pub remove: String,
    /// Installs packages.
    pub install: String,
    /// The QEMU guest agent's package.
    pub guest_agent: String,
}

#[derive(Deserialize)]
struct Managers {
    manager: Vec<PackageManager>,
}

/// The commands for `manager`, from drivers-db.
pub fn package_manager(manager: &str) -> Option<PackageManager> {
    let db: Managers =
        toml::from_str(MANAGERS_TOML).expect("drivers-db/linux/package-managers.toml is valid (tested)");
    db.manager.into_iter().find(|m| m.manager == manager)
}

/// One first-boot script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// File name without `.sh`, starting with a two-digit order ("10-remove-tools").
    pub name: String,
    /// The shell commands.
    pub body: String,
}

/// A script that removes `packages`.
pub fn remove_packages_script(pm: &PackageManager, packages: &[String]) -> Script {
    Script {
        name: "10-remove-hypervisor-tools".into(),
        body: format!(
            "# Remove the old hypervisor's guest tools (disabled offline by v2x).\n{} {}\n",
            pm.remove,
            packages.join(" ")
        ),
    }
}

/// A script that installs the QEMU guest agent once the network is up.
pub fn guest_agent_script(pm: &PackageManager) -> Script {
    let probe = if pm.refresh.is_empty() {
        format!("{} {}", pm.install, pm.guest_agent)
    } else {
        pm.refresh.clone()
    };
    Script {
        name: "20-install-qemu-guest-agent".into(),
        body: format!(
            "# Install the QEMU guest agent; waits up to 10 minutes for the network.\n\
             n=0\n\
             until {probe}; do\n\
             \tn=$((n + 1)); [ $n -ge 20 ] && exit 1\n\
             \tsleep 30\n\
             done\n\
             {} {}\n\
             if command -v systemctl >/dev/null; then systemctl enable --now qemu-guest-agent || true; fi\n",
            pm.install, pm.guest_agent
        ),
    }
}

fn runner() -> String {
    format!(
        r#"#!/bin/sh
# v2x first-boot runner: runs each script in {SCRIPTS} once, in name
# order, after a conversion to KVM. Output goes to /var/log/v2x-firstboot.log.
d={SCRIPTS}
log=/var/log/v2x-firstboot.log
mkdir -p "$d/done" "$d/failed"
for s in "$d"/*.sh; do
	[ -f "$s" ] || continue
	echo "== $(date) $s" >>"$log"
	if sh "$s" >>"$log" 2>&1; then
		mv "$s" "$d/done/"
		continue
	fi
	tries=$(cat "$s.tries" 2>/dev/null || echo 0)
	tries=$((tries + 1))
	echo "$tries" >"$s.tries"
	echo "   failed (attempt $tries of {MAX_TRIES})" >>"$log"
	if [ "$tries" -ge {MAX_TRIES} ]; then mv "$s" "$s.tries" "$d/failed/"; fi
done
# Nothing left to run: take the runner out of the boot sequence.
if ! ls "$d"/*.sh >/dev/null 2>&1; then
	rm -f {WANTS_DIR}/v2x-firstboot.service /etc/rc[2345].d/S99v2x-firstboot /etc/rc.d/rc[2345].d/S99v2x-firstboot
fi
exit 0
"#
    )
}

/// A oneshot that boot does not wait for: without default dependencies,
/// multi-user.target gets no After= on it, so a script waiting for the
/// network never delays the guest's boot. Shutdown stops it.
fn unit() -> String {
    format!(
        "# v2x first-boot scripts, after a conversion to KVM (see {RUNNER}).\n\
         [Unit]\n\
         Description=v2x first-boot scripts\n\
         DefaultDependencies=no\n\
         Requires=sysinit.target\n\
         After=sysinit.target local-fs.target\n\
         Conflicts=shutdown.target\n\
         Before=shutdown.target\n\
         ConditionPathExistsGlob={SCRIPTS}/*.sh\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart=/bin/sh {RUNNER}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

fn init_script() -> String {
    format!(
        "#!/bin/sh\n\
         ### BEGIN INIT INFO\n\
         # Provides:          v2x-firstboot\n\
         # Required-Start:    $local_fs $remote_fs\n\
         # Required-Stop:\n\
         # Default-Start:     2 3 4 5\n\
         # Default-Stop:\n\
         # Short-Description: v2x first-boot scripts\n\
         ### END INIT INFO\n\
         case \"$1\" in\n\
         start) /bin/sh {RUNNER} </dev/null >/dev/null 2>&1 & ;;\n\
         esac\n\
         exit 0\n"
    )
}

/// Mkdir edits for `dir` and its missing parents, outermost first.
pub(crate) fn mkdirs(tree: &GuestRoot, dir: &str, edits: &mut Vec<Edit>) -> Result<()> {
    let mut path = String::new();
    for comp in dir.split('/').filter(|c| !c.is_empty()) {
        path.push('/');
        path.push_str(comp);
        if !tree.exists(&path)? && !edits.iter().any(|e| e.path() == path) {
            edits.push(Edit::Mkdir { path: path.clone() });
        }
    }
    Ok(())
}

/// True when the guest boots with systemd.
pub fn has_systemd(tree: &GuestRoot) -> Result<bool> {
    Ok(tree.exists("/lib/systemd/systemd")? || tree.exists("/usr/lib/systemd/systemd")?)
}

/// The step that installs the runner and `scripts` (nothing when empty).
pub fn step(tree: &GuestRoot, scripts: &[Script]) -> Result<Step> {
    let mut edits = Vec::new();
    let mut notes = Vec::new();
    if !scripts.is_empty() {
        mkdirs(tree, SCRIPTS, &mut edits)?;
        edits.push(Edit::WriteFile {
            path: RUNNER.into(),
            old: tree.read_file_max(RUNNER, 1 << 20).ok(),
            new: runner().into_bytes(),
            mode: 0o755,
        });
        for s in scripts {
            let path = format!("{SCRIPTS}/{}.sh", s.name);
            edits.push(Edit::WriteFile {
                old: tree.read_file_max(&path, 1 << 20).ok(),
                path,
                new: format!("#!/bin/sh\n{}", s.body).into_bytes(),
                mode: 0o755,
            });
            notes.push(format!("at first boot: {}", s.name));
        }
        if has_systemd(tree)? {
            edits.push(Edit::WriteFile {
                path: UNIT.into(),
                old: tree.read_file_max(UNIT, 1 << 20).ok(),
                new: unit().into_bytes(),
                mode: 0o644,
            });
            mkdirs(tree, WANTS_DIR, &mut edits)?;
            let link = format!("{WANTS_DIR}/v2x-firstboot.service");
            if tree.lstat(&link).is_err() {
                edits.push(Edit::Symlink {
                    path: link,
                    target: UNIT.into(),
                });
            }
        } else {
            edits.push(Edit::WriteFile {
                path: INIT_SCRIPT.into(),
                old: tree.read_file_max(INIT_SCRIPT, 1 << 20).ok(),
                new: init_script().into_bytes(),
                mode: 0o755,
            });
            for rc in ["2", "3", "5"] {
                for dir in [format!("/etc/rc{rc}.d"), format!("/etc/rc.d/rc{rc}.d")] {
                    let link = format!("{dir}/S99v2x-firstboot");
                    if tree.exists(&dir)? && tree.lstat(&link).is_err() {
                        edits.push(Edit::Symlink {
                            path: link,
                            target: "../init.d/v2x-firstboot".into(),
                        });
                    }
                }
            }
        }
    }
    Ok(Step {
        id: "firstboot".into(),
        summary: "scripts that need the running guest run once at its first boot".into(),
        edits,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memfs::MemFs;
    use std::sync::Arc;

    #[test]
    fn every_manager_has_commands() {
        for m in ["apt", "dnf", "yum", "zypper", "pacman", "apk"] {
            let pm = package_manager(m).unwrap_or_else(|| panic!("{m}"));
            assert!(!pm.remove.is_empty() && !pm.install.is_empty() && !pm.guest_agent.is_empty());
        }
        assert!(package_manager("nix").is_none());
    }

    #[test]
    fn systemd_guest_gets_unit_and_wants_link() {
        let mut fs = MemFs::new();
        fs.file("/lib/systemd/systemd", b"ELF");
        fs.dir("/etc/systemd/system");
        fs.dir("/usr/local/lib");
        let tree = GuestRoot::new(Arc::new(fs), "sda1");
        let pm = package_manager("apt").unwrap();
        let s = step(&tree, &[remove_packages_script(&pm, &["open-vm-tools".into()])]).unwrap();
        let paths: Vec<&str> = s.edits.iter().map(Edit::path).collect();
        assert_eq!(
            paths,
            [
                "/usr/local/lib/v2x",
                "/usr/local/lib/v2x/firstboot.d",
                RUNNER,
                "/usr/local/lib/v2x/firstboot.d/10-remove-hypervisor-tools.sh",
                UNIT,
                WANTS_DIR,
                "/etc/systemd/system/multi-user.target.wants/v2x-firstboot.service",
            ]
        );
        let Edit::WriteFile { new, .. } = &s.edits[3] else {
            panic!()
        };
        assert!(String::from_utf8_lossy(new).contains("apt-get -y purge open-vm-tools"));
    }

    #[test]
    fn sysv_guest_gets_rc_links() {
        let mut fs = MemFs::new();
        fs.dir("/etc/rc2.d");
        fs.dir("/etc/rc3.d");
        fs.dir("/etc/init.d");
        let tree = GuestRoot::new(Arc::new(fs), "sda1");
        let pm = package_manager("yum").unwrap();
        let s = step(&tree, &[guest_agent_script(&pm)]).unwrap();
        let links: Vec<&str> = s
            .edits
            .iter()
            .filter(|e| matches!(e, Edit::Symlink { .. }))
            .map(Edit::path)
            .collect();
        assert_eq!(
            links,
            ["/etc/rc2.d/S99v2x-firstboot", "/etc/rc3.d/S99v2x-firstboot"]
        );
        assert!(s.edits.iter().any(|e| e.path() == INIT_SCRIPT));
        assert!(step(&tree, &[]).unwrap().edits.is_empty());
    }

    #[test]
    fn runner_is_valid_shell() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.sh");
        std::fs::write(&p, runner()).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pm = package_manager("apt").unwrap();
        std::fs::write(&p, guest_agent_script(&pm).body).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg(&p)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
