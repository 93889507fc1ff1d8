//! The guest edit plan: every change conversion will make, computed before
//! anything is written. `convert --dry-run` prints it (with diffs of text
//! files); the apply stage carries it out on the overlay.

use serde::Serialize;
use similar::TextDiff;
use std::fmt::Write;

/// Text files larger than this are shown as "changed" without a diff.
const MAX_DIFF_BYTES: usize = 1 << 20;

/// One change to the guest tree.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Edit {
    /// Replace (or create, when `old` is None) a file's content.
    WriteFile {
        /// Guest path.
        path: String,
        /// Previous content, if the file existed.
        #[serde(skip)]
        old: Option<Vec<u8>>,
        /// New content.
        #[serde(skip)]
        new: Vec<u8>,
        /// Permission bits for a new file.
        mode: u32,
    },
    /// Append bytes to an existing file (an initramfs).
    Append {
        /// Guest path.
        path: String,
        /// Bytes appended (including alignment padding).
        #[serde(skip)]
        data: Vec<u8>,
        /// Length appended.
        len: u64,
    },
    /// Remove a file or symlink.
    Remove {
        /// Guest path.
        path: String,
    },
    /// Create a symlink.
    Symlink {
        /// Guest path.
        path: String,
        /// Link target.
        target: String,
    },
    /// Create a directory.
    Mkdir {
        /// Guest path.
        path: String,
    },
}

impl Edit {
    /// The guest path the edit touches.
    pub fn path(&self) -> &str {
        match self {
            Edit::WriteFile { path, .. }
            | Edit::Append { path, .. }
            | Edit::Remove { path }
            | Edit::Symlink { path, .. }
            | Edit::Mkdir { path } => path,
        }
    }
}

/// A named group of edits with the reason for them ("virtio drivers in the
/// initramfs of 6.1.0-18-amd64", "device names in /etc/fstab").
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Short stable id ("initramfs", "device-names", "hypervisor-tools", ...).
    pub id: String,
    /// What this step does and why, in one line.
    pub summary: String,
    /// The edits.
    pub edits: Vec<Edit>,
    /// Facts worth reporting that are not edits (skipped kernels, kept names).
    pub notes: Vec<String>,
}

/// Every change conversion will make to one guest root.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EditPlan {
    /// The steps, in the order they are applied.
    pub steps: Vec<Step>,
}

impl EditPlan {
    /// Adds a step (steps with no edits and no notes are dropped).
    pub fn push(&mut self, step: Step) {
        if !step.edits.is_empty() || !step.notes.is_empty() {
            self.steps.push(step);
        }
    }

    /// Number of edits in all steps.
    pub fn edit_count(&self) -> usize {
        self.steps.iter().map(|s| s.edits.len()).sum()
    }

    /// The human-readable plan: each step, each edit, and unified diffs of text files.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.steps.is_empty() {
            s.push_str("no changes to the guest\n");
        }
        for step in &self.steps {
            let _ = writeln!(s, "== {}: {}", step.id, step.summary);
            for n in &step.notes {
                let _ = writeln!(s, "   note: {n}");
            }
            for e in &step.edits {
                render_edit(&mut s, e);
            }
        }
        s
    }
}

fn render_edit(s: &mut String, e: &Edit) {
    match e {
        Edit::WriteFile { path, old, new, .. } => {
            let verb = if old.is_some() { "change" } else { "create" };
            let _ = writeln!(s, "   {verb} {path} ({} bytes)", new.len());
            let old_text = old.as_deref().map(std::str::from_utf8);
            let new_text = std::str::from_utf8(new);
            match (old_text, new_text) {
                (Some(Ok(o)), Ok(n)) if o.len() + n.len() <= MAX_DIFF_BYTES => {
                    let diff = TextDiff::from_lines(o, n);
                    let u = diff
                        .unified_diff()
                        .header(&format!("a{path}"), &format!("b{path}"))
                        .to_string();
                    for line in u.lines() {
                        let _ = writeln!(s, "     {line}");
                    }
                }
                (None, Ok(n)) if n.len() <= MAX_DIFF_BYTES => {
                    for line in n.lines() {
                        let _ = writeln!(s, "     +{line}");
                    }
                }
                _ => {}
            }
        }
        Edit::Append { path, len, .. } => {
            let _ = writeln!(s, "   append {len} bytes to {path}");
        }
        Edit::Remove { path } => {
            let _ = writeln!(s, "   remove {path}");
        }
        Edit::Symlink { path, target } => {
            let _ = writeln!(s, "   symlink {path} -> {target}");
        }
        Edit::Mkdir { path } => {
            let _ = writeln!(s, "   mkdir {path}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_renders_diffs_and_json() {
        let mut plan = EditPlan::default();
        plan.push(Step {
            id: "device-names".into(),
            summary: "disk names that change on virtio".into(),
            edits: vec![Edit::WriteFile {
                path: "/etc/fstab".into(),
                old: Some(b"/dev/sda1 / ext4 defaults 0 1\nproc /proc proc defaults 0 0\n".to_vec()),
                new: b"UUID=1234 / ext4 defaults 0 1\nproc /proc proc defaults 0 0\n".to_vec(),
                mode: 0o644,
            }],
            notes: vec![],
        });
        plan.push(Step {
            id: "empty".into(),
            summary: "nothing".into(),
            edits: vec![],
            notes: vec![],
        });
        let text = plan.render();
        assert!(text.contains("-/dev/sda1 / ext4 defaults 0 1"), "{text}");
        assert!(text.contains("+UUID=1234 / ext4 defaults 0 1"), "{text}");
        assert_eq!(plan.steps.len(), 1);
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["steps"][0]["edits"][0]["op"], "write-file");
        assert_eq!(json["steps"][0]["edits"][0]["path"], "/etc/fstab");
    }
}
