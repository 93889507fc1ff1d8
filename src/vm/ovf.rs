//! OVF descriptors -> [`VmSpec`]: DMTF OVF 1.x (VMware, Cisco and most
//! exporters), OVF 2.0 (VirtualBox) and VMware's pre-DMTF 0.9 namespace.
//!
//! The XML is parsed by roxmltree with DTDs refused and a node cap, so entity
//! expansion and huge trees stop before they cost memory. Elements are matched
//! by local name (producers disagree on prefixes and on `rasd:`/`sasd:`/`epasd:`);
//! the envelope's namespace decides the version.

use super::{
    file_stem_name, normalize_mac, DiskLocation, Firmware, SourceKind, VmDisk, VmNic, VmSpec, MAX_DISKS,
    MAX_MEMORY_MIB, MAX_NICS, MAX_VCPUS,
};
use roxmltree::{Document, Node, ParsingOptions};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use v2x_formats::error::{check_limit, mul};
use v2x_formats::{Error, Result};

/// Most XML nodes (elements, attributes' owners, text) one OVF may have.
/// Real descriptors have a few thousand; this bounds roxmltree's memory.
pub const MAX_OVF_NODES: u32 = 200_000;
/// Most `File` references and hardware `Item`s one OVF may list.
pub const MAX_OVF_ENTRIES: usize = 4096;

const NS_ENVELOPE_1: &str = "http://schemas.dmtf.org/ovf/envelope/1";
const NS_ENVELOPE_2: &str = "http://schemas.dmtf.org/ovf/envelope/2";
const NS_ENVELOPE_PREFIX: &str = "http://schemas.dmtf.org/ovf/envelope/";
const NS_VMWARE_0_9: &str = "http://www.vmware.com/schema/ovf/1/envelope";
const NS_VMW: &str = "http://www.vmware.com/schema/ovf";
const NS_VBOX: &str = "http://www.virtualbox.org/ovf/machine";
const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

mod files;
mod values;

use files::percent_decode;
pub use files::{contained_path, has_scheme, read_capped, read_descriptor};
use values::{byte_offset, format_hint, host_resource, parse_u64, property_ref, unit_bytes};

/// CIM resource types (`rasd:ResourceType`) the parser acts on.
mod rt {
    pub const CPU: u32 = 3;
    pub const MEMORY: u32 = 4;
    pub const IDE: u32 = 5;
    pub const SCSI: u32 = 6;
    pub const NIC: u32 = 10;
    pub const FLOPPY: u32 = 14;
    pub const CD: u32 = 15;
    pub const DVD: u32 = 16;
    pub const DISK: u32 = 17;
    pub const SATA: u32 = 20;
}

/// Parses an OVF descriptor. `resolve` turns a File's `ovf:href` (and whether
/// it is gzip-compressed) into a [`DiskLocation`]; it refuses hrefs that escape.
pub fn parse(
    xml: &str,
    source_path: &Path,
    resolve: &mut dyn FnMut(&str, bool) -> Result<DiskLocation>,
) -> Result<VmSpec> {
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_OVF_NODES,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(xml, opts).map_err(|e| xml_error(xml, e))?;
    let root = doc.root_element();
    let ns = root.tag_name().namespace().unwrap_or("");
    if root.tag_name().name() != "Envelope" {
        return Err(Error::corrupt(
            format!(
                "the root element is <{}>, not an OVF Envelope",
                root.tag_name().name()
            ),
            0,
        ));
    }
    if ns != NS_ENVELOPE_1 && ns != NS_ENVELOPE_2 && ns != NS_VMWARE_0_9 {
        return Err(match ns.strip_prefix(NS_ENVELOPE_PREFIX) {
            Some(v) => Error::unsupported(format!("OVF envelope version {v} ({ns})")),
            None => Error::unsupported(format!("OVF envelope namespace '{ns}'")),
        });
    }
    Ovf {
        ns,
        notes: Vec::new(),
    }
    .spec(root, source_path, resolve)
}

/// Reads the OVF at `path`; disk files are resolved in its directory.
pub fn load(path: &Path) -> Result<VmSpec> {
    let bytes = read_descriptor(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Error::corrupt("OVF is not UTF-8 text", e.valid_up_to() as u64))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut resolve = |href: &str, gzip: bool| -> Result<DiskLocation> {
        let rel = contained_path(&percent_decode(href)?)?;
        if gzip {
            return Err(Error::unsupported(format!(
                "disk file '{href}' is gzip-compressed (ovf:compression); decompress it first"
            )));
        }
        Ok(DiskLocation::File { path: dir.join(rel) })
    };
    parse(text, path, &mut resolve).map_err(|e| e.context_msg(&path.display().to_string()))
}

/// Maps a roxmltree error to ours: a DTD is a feature refused, the node cap a
/// limit, anything else a malformed descriptor.
fn xml_error(xml: &str, e: roxmltree::Error) -> Error {
    match e {
        roxmltree::Error::DtdDetected => {
            Error::unsupported("OVF with a DTD (<!DOCTYPE> with declarations); entities are not expanded")
        }
        roxmltree::Error::NodesLimitReached => Error::LimitExceeded {
            what: "OVF XML nodes",
            value: u64::from(MAX_OVF_NODES) + 1,
            max: u64::from(MAX_OVF_NODES),
        },
        e => {
            let pos = e.pos();
            Error::corrupt(
                format!("OVF is not well-formed XML: {e}"),
                byte_offset(xml, pos.row, pos.col),
            )
        }
    }
}

/// A `File` of the References section.
struct FileRef<'a> {
    href: &'a str,
    gzip: bool,
}

/// A `Disk` of the DiskSection.
struct DiskDef<'a> {
    id: &'a str,
    file: Option<&'a str>,
    capacity: u64,
    format: Option<String>,
}

/// One hardware `Item` (or OVF 2.0 `StorageItem`/`EthernetPortItem`) that
/// applies to the chosen configuration.
struct Item<'a, 'i> {
    node: Node<'a, 'i>,
    id: Option<&'a str>,
    kind: u32,
    specific: bool,
}

/// Parser state: the envelope's namespace and the notes gathered so far.
struct Ovf<'a> {
    ns: &'a str,
    notes: Vec<String>,
}

impl<'a> Ovf<'a> {
    /// An attribute in the envelope's namespace, or unqualified.
    fn attr<'n>(&self, n: Node<'n, '_>, name: &str) -> Option<&'n str> {
        n.attribute((self.ns, name)).or_else(|| n.attribute(name))
    }

    fn spec(
        mut self,
        root: Node<'_, '_>,
        source_path: &Path,
        resolve: &mut dyn FnMut(&str, bool) -> Result<DiskLocation>,
    ) -> Result<VmSpec> {
        let files = self.references(root)?;
        let props = properties(root, self.ns);
        let disk_defs = self.disk_section(root, &files, &props)?;
        let system = virtual_system(root)?;
        let config = self.configuration(root);
        let hw_sections: Vec<Node> = children(system, "VirtualHardwareSection").collect();
        let Some(&hw) = hw_sections.first() else {
            return Err(Error::corrupt(
                "VirtualSystem has no VirtualHardwareSection",
                off(system),
            ));
        };
        if hw_sections.len() > 1 {
            self.notes.push(format!(
                "{} VirtualHardwareSections; the first is used",
                hw_sections.len()
            ));
        }
        let items = self.items(hw, config.as_deref())?;

        let mut spec = VmSpec {
            name: self.name(system, source_path),
            source_kind: SourceKind::Ovf,
            source_path: source_path.to_path_buf(),
            vcpus: 1,
            memory_mib: super::DEFAULT_MEMORY_MIB,
            firmware: None,
            os_type: None,
            os_description: None,
            disks: Vec::new(),
            nics: Vec::new(),
            notes: Vec::new(),
        };
        self.os(system, &mut spec);
        self.hardware(hw, &items, &disk_defs, &files, &mut spec, resolve)?;
        spec.firmware = firmware(hw, system);
        self.vbox_macs(system, &mut spec.nics);
        spec.notes = self.notes;
        Ok(spec)
    }

    /// References/File entries by `ovf:id`.
    fn references<'n>(&self, root: Node<'n, '_>) -> Result<Vec<(&'n str, FileRef<'n>)>> {
        let mut files: Vec<(&str, FileRef)> = Vec::new();
        for refs in children(root, "References") {
            for f in children(refs, "File") {
                check_limit(
                    "OVF File references",
                    files.len() as u64 + 1,
                    MAX_OVF_ENTRIES as u64,
                )?;
                let id = self
                    .attr(f, "id")
                    .ok_or_else(|| Error::corrupt("File without ovf:id", off(f)))?;
                let href = self
                    .attr(f, "href")
                    .ok_or_else(|| Error::corrupt(format!("File '{id}' without ovf:href"), off(f)))?;
                if files.iter().any(|(i, _)| *i == id) {
                    return Err(Error::corrupt(format!("File id '{id}' appears twice"), off(f)));
                }
                if self.attr(f, "chunkSize").is_some() {
                    return Err(Error::unsupported(format!(
                        "File '{id}' is split in chunks (ovf:chunkSize)"
                    )));
                }
                if let Some(size) = self.attr(f, "size") {
                    parse_u64(size).map_err(|_| {
                        Error::corrupt(format!("File '{id}' ovf:size '{size}' is not a number"), off(f))
                    })?;
                }
                let gzip = match self.attr(f, "compression") {
                    None | Some("identity") => false,
                    Some("gzip") => true,
                    Some(c) => {
                        return Err(Error::unsupported(format!("File '{id}' compression '{c}'")));
                    }
                };
                files.push((id, FileRef { href, gzip }));
            }
        }
        Ok(files)
    }

    /// DiskSection/Disk entries, in document order.
    fn disk_section<'n>(
        &self,
        root: Node<'n, '_>,
        files: &[(&str, FileRef)],
        props: &HashMap<&str, &str>,
    ) -> Result<Vec<DiskDef<'n>>> {
        let mut defs: Vec<DiskDef> = Vec::new();
        for section in children(root, "DiskSection") {
            for d in children(section, "Disk") {
                check_limit("OVF disks", defs.len() as u64 + 1, MAX_DISKS as u64)?;
                let id = self
                    .attr(d, "diskId")
                    .ok_or_else(|| Error::corrupt("Disk without ovf:diskId", off(d)))?;
                if defs.iter().any(|x| x.id == id) {
                    return Err(Error::corrupt(format!("Disk id '{id}' appears twice"), off(d)));
                }
                let file = self.attr(d, "fileRef");
                if let Some(f) = file {
                    if !files.iter().any(|(i, _)| *i == f) {
                        return Err(Error::corrupt(
                            format!("Disk '{id}' names File '{f}', which References does not list"),
                            off(d),
                        ));
                    }
                }
                let raw = self
                    .attr(d, "capacity")
                    .ok_or_else(|| Error::corrupt(format!("Disk '{id}' without ovf:capacity"), off(d)))?;
                let raw = property_ref(raw, props).ok_or_else(|| {
                    Error::corrupt(format!("Disk '{id}' capacity '{raw}' names no Property"), off(d))
                })?;
                let n = parse_u64(raw).map_err(|_| {
                    Error::corrupt(
                        format!("Disk '{id}' ovf:capacity '{raw}' is not a number"),
                        off(d),
                    )
                })?;
                let units = self.attr(d, "capacityAllocationUnits").unwrap_or("byte");
                let unit = unit_bytes(units).map_err(|e| e.context_msg(&format!("Disk '{id}'")))?;
                let capacity = mul(n, unit, &format!("Disk '{id}' capacity {n} x {units}"), off(d))?;
                let format = self.attr(d, "format").map(format_hint);
                defs.push(DiskDef {
                    id,
                    file,
                    capacity,
                    format,
                });
            }
        }
        Ok(defs)
    }

    /// The DeploymentOptionSection's chosen configuration: the default, else the first.
    fn configuration(&mut self, root: Node<'_, '_>) -> Option<String> {
        let configs: Vec<Node> = children(root, "DeploymentOptionSection")
            .flat_map(|s| children(s, "Configuration"))
            .collect();
        let ids: Vec<&str> = configs.iter().filter_map(|c| self.attr(*c, "id")).collect();
        let chosen = configs
            .iter()
            .find(|c| {
                self.attr(**c, "default")
                    .is_some_and(|v| v.trim() == "true" || v.trim() == "1")
            })
            .and_then(|c| self.attr(*c, "id"))
            .or(ids.first().copied())?;
        if ids.len() > 1 {
            self.notes.push(format!(
                "{} deployment configurations ({}); using '{chosen}'",
                ids.len(),
                ids.join(", ")
            ));
        }
        Some(chosen.to_string())
    }

    /// The hardware Items that apply to `config`, one per InstanceID: an Item
    /// naming the configuration overrides the generic one with the same id.
    fn items<'n, 'i>(&self, hw: Node<'n, 'i>, config: Option<&str>) -> Result<Vec<Item<'n, 'i>>> {
        let mut items: Vec<Item> = Vec::new();
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut seen = 0usize;
        for n in hw.children().filter(|n| {
            n.is_element() && matches!(n.tag_name().name(), "Item" | "StorageItem" | "EthernetPortItem")
        }) {
            seen += 1;
            check_limit("OVF hardware Items", seen as u64, MAX_OVF_ENTRIES as u64)?;
            let specific = match self.attr(n, "configuration") {
                None => false,
                Some(list) => match config {
                    Some(c) if list.split_whitespace().any(|x| x == c) => true,
                    _ => continue,
                },
            };
            // Range Items (`ovf:bound="min"|"max"`) are limits; the value is the unbound/"normal" one.
            if matches!(self.attr(n, "bound"), Some("min" | "max")) {
                continue;
            }
            let Some(kind) = field(n, "ResourceType") else {
                continue;
            };
            let kind = parse_u64(kind)
                .ok()
                .and_then(|k| u32::try_from(k).ok())
                .ok_or_else(|| {
                    Error::corrupt(format!("Item ResourceType '{kind}' is not a number"), off(n))
                })?;
            let id = field(n, "InstanceID").or_else(|| field(n, "InstanceId"));
            let item = Item {
                node: n,
                id,
                kind,
                specific,
            };
            match id.and_then(|i| by_id.get(i).copied()) {
                Some(at) => {
                    if specific || !items[at].specific {
                        items[at] = item;
                    }
                }
                None => {
                    if let Some(i) = id {
                        by_id.insert(i, items.len());
                    }
                    items.push(item);
                }
            }
        }
        Ok(items)
    }

    /// CPUs, memory, NICs, disks and the ignored drives from the Items.
    fn hardware(
        &mut self,
        hw: Node<'_, '_>,
        items: &[Item],
        defs: &[DiskDef],
        files: &[(&str, FileRef)],
        spec: &mut VmSpec,
        resolve: &mut dyn FnMut(&str, bool) -> Result<DiskLocation>,
    ) -> Result<()> {
        let controllers: HashMap<&str, String> = items
            .iter()
            .filter(|i| matches!(i.kind, rt::IDE | rt::SCSI | rt::SATA))
            .filter_map(|i| Some((i.id?, controller_label(i))))
            .collect();
        let (mut cpu_seen, mut mem_seen) = (false, false);
        let mut used_files: HashSet<&str> = HashSet::new();
        let mut used_disks: HashSet<&str> = HashSet::new();
        for item in items {
            let n = item.node;
            let label = field(n, "ElementName")
                .or_else(|| field(n, "Caption"))
                .or(item.id)
                .unwrap_or("?")
                .to_string();
            match item.kind {
                rt::CPU => {
                    cpu_seen = true;
                    let q = quantity(n, "CPU")?;
                    if q == 0 {
                        return Err(Error::corrupt("CPU Item VirtualQuantity is 0", off(n)));
                    }
                    check_limit("vCPUs", q, u64::from(MAX_VCPUS))?;
                    spec.vcpus = q as u32;
                }
                rt::MEMORY => {
                    mem_seen = true;
                    let q = quantity(n, "memory")?;
                    let units = field(n, "AllocationUnits").unwrap_or("byte * 2^20");
                    let unit = unit_bytes(units).map_err(|e| e.context_msg("memory Item"))?;
                    let bytes = mul(q, unit, &format!("memory {q} x {units}"), off(n))?;
                    let mib = bytes.div_ceil(1 << 20);
                    if mib == 0 {
                        return Err(Error::corrupt("memory Item states 0 bytes", off(n)));
                    }
                    check_limit("memory MiB", mib, MAX_MEMORY_MIB)?;
                    spec.memory_mib = mib;
                }
                rt::NIC => {
                    check_limit("NICs", spec.nics.len() as u64 + 1, MAX_NICS as u64)?;
                    let mac = match field(n, "Address") {
                        Some(a) => Some(normalize_mac(a).ok_or_else(|| {
                            Error::corrupt(format!("NIC Item '{label}' Address '{a}' is not a MAC"), off(n))
                        })?),
                        None => None,
                    };
                    spec.nics.push(VmNic {
                        network: field(n, "Connection").map(str::to_string),
                        mac,
                        model: field(n, "ResourceSubType").map(str::to_string),
                    });
                }
                rt::DISK => {
                    let Some(host) = field(n, "HostResource") else {
                        self.notes
                            .push(format!("disk Item '{label}' has no HostResource; skipped"));
                        continue;
                    };
                    let attachment = self.attachment(item, &label, &controllers);
                    let disk = match host_resource(host) {
                        Some(("disk", id)) => {
                            let def = defs.iter().find(|d| d.id == id).ok_or_else(|| {
                                Error::corrupt(format!("disk Item '{label}' names Disk '{id}', which DiskSection does not list"), off(n))
                            })?;
                            if !used_disks.insert(def.id) {
                                self.notes
                                    .push(format!("Disk '{id}' is attached twice; the second is ignored"));
                                continue;
                            }
                            self.disk_from_def(def, files, attachment, &mut used_files, resolve)?
                        }
                        Some(("file", id)) => {
                            let (fid, f) = files.iter().find(|(i, _)| *i == id).ok_or_else(|| {
                                Error::corrupt(format!("disk Item '{label}' names File '{id}', which References does not list"), off(n))
                            })?;
                            used_files.insert(fid);
                            VmDisk {
                                location: resolve(f.href, f.gzip)?,
                                capacity: None,
                                format_hint: None,
                                attachment,
                            }
                        }
                        _ => {
                            return Err(Error::corrupt(
                                format!("disk Item '{label}' HostResource '{host}' names no Disk or File"),
                                off(n),
                            ));
                        }
                    };
                    check_limit("disks", spec.disks.len() as u64 + 1, MAX_DISKS as u64)?;
                    spec.disks.push(disk);
                }
                rt::CD | rt::DVD | rt::FLOPPY => {
                    let what = if item.kind == rt::FLOPPY {
                        "floppy drive"
                    } else {
                        "CD/DVD drive"
                    };
                    let image = field(n, "HostResource")
                        .and_then(host_resource)
                        .and_then(|(_, id)| files.iter().find(|(i, _)| *i == id));
                    match image {
                        Some((fid, f)) => {
                            used_files.insert(fid);
                            self.notes.push(format!(
                                "{what} '{label}' with image '{}' is not converted",
                                f.href
                            ));
                        }
                        None => self.notes.push(format!("{what} '{label}' is not converted")),
                    }
                }
                _ => {}
            }
        }
        // Disks no Item of any configuration attaches, in DiskSection order.
        for def in defs {
            if used_disks.contains(def.id) || attached_anywhere(hw, def.id) {
                continue;
            }
            check_limit("disks", spec.disks.len() as u64 + 1, MAX_DISKS as u64)?;
            self.notes.push(format!(
                "Disk '{}' is attached to no hardware Item; added last",
                def.id
            ));
            let d = self.disk_from_def(def, files, None, &mut used_files, resolve)?;
            spec.disks.push(d);
        }
        for (id, f) in files {
            if !used_files.contains(id) && !defs.iter().any(|d| d.file == Some(*id)) {
                self.notes
                    .push(format!("file '{}' ({id}) is not a disk; not converted", f.href));
            }
        }
        if !cpu_seen {
            self.notes.push("no CPU Item; assuming 1 vCPU".into());
        }
        if !mem_seen {
            self.notes
                .push(format!("no memory Item; assuming {} MiB", spec.memory_mib));
        }
        Ok(())
    }

    /// The [`VmDisk`] of a DiskSection entry: its file, or a blank disk.
    fn disk_from_def<'n>(
        &self,
        def: &DiskDef<'n>,
        files: &[(&'n str, FileRef)],
        attachment: Option<String>,
        used_files: &mut HashSet<&'n str>,
        resolve: &mut dyn FnMut(&str, bool) -> Result<DiskLocation>,
    ) -> Result<VmDisk> {
        let location = match def.file.and_then(|f| files.iter().find(|(i, _)| *i == f)) {
            Some((fid, f)) => {
                used_files.insert(fid);
                resolve(f.href, f.gzip)?
            }
            None => DiskLocation::Blank,
        };
        Ok(VmDisk {
            location,
            capacity: Some(def.capacity),
            format_hint: def.format.clone(),
            attachment,
        })
    }

    /// "SCSI Controller 0 (lsilogic) unit 0" from the disk Item's Parent.
    fn attachment(
        &mut self,
        item: &Item,
        label: &str,
        controllers: &HashMap<&str, String>,
    ) -> Option<String> {
        let parent = field(item.node, "Parent")?;
        let Some(ctrl) = controllers.get(parent) else {
            self.notes.push(format!(
                "disk Item '{label}': Parent '{parent}' is no disk controller"
            ));
            return None;
        };
        Some(match field(item.node, "AddressOnParent") {
            Some(unit) => format!("{ctrl} unit {unit}"),
            None => ctrl.clone(),
        })
    }

    /// `Name`, else `ovf:id`, else the file stem.
    fn name(&self, system: Node<'_, '_>, source_path: &Path) -> String {
        children(system, "Name")
            .next()
            .and_then(|n| n.text())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .or_else(|| self.attr(system, "id").filter(|s| !s.is_empty()))
            .map_or_else(|| file_stem_name(source_path), str::to_string)
    }

    /// OperatingSystemSection: `vmw:osType`, VirtualBox's OSType, else `ovf:id`.
    fn os(&self, system: Node<'_, '_>, spec: &mut VmSpec) {
        let Some(os) = children(system, "OperatingSystemSection").next() else {
            return;
        };
        let vbox = os
            .children()
            .find(|c| c.tag_name().namespace() == Some(NS_VBOX) && c.tag_name().name() == "OSType")
            .and_then(|c| c.text());
        spec.os_type = os
            .attribute((NS_VMW, "osType"))
            .or(vbox)
            .or_else(|| self.attr(os, "id"))
            .map(|s| s.trim().to_string());
        spec.os_description = children(os, "Description")
            .next()
            .and_then(|d| d.text())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
    }

    /// VirtualBox's own machine section lists MACs the OVF items lack: the
    /// enabled adapters in slot order fill the NICs when the counts agree.
    fn vbox_macs(&mut self, system: Node<'_, '_>, nics: &mut [VmNic]) {
        let Some(machine) = vbox_machine(system) else {
            return;
        };
        let macs: Vec<Option<String>> = machine
            .descendants()
            .filter(|n| n.tag_name().name() == "Adapter" && n.attribute("enabled") == Some("true"))
            .map(|n| n.attribute("MACAddress").and_then(normalize_mac))
            .collect();
        if macs.len() != nics.len() {
            if !macs.is_empty() {
                self.notes.push(format!(
                    "VirtualBox lists {} enabled adapters for {} NICs; its MACs are not used",
                    macs.len(),
                    nics.len()
                ));
            }
            return;
        }
        for (nic, mac) in nics.iter_mut().zip(macs) {
            if nic.mac.is_none() {
                nic.mac = mac;
            }
        }
    }
}

/// Firmware from VMware's `vmw:Config key="firmware"` or VirtualBox's
/// `<Firmware type=...>`; None when neither says.
fn firmware(hw: Node<'_, '_>, system: Node<'_, '_>) -> Option<Firmware> {
    let vmw = hw
        .children()
        .filter(|c| c.tag_name().namespace() == Some(NS_VMW) && c.tag_name().name() == "Config")
        .find(|c| c.attribute((NS_VMW, "key")) == Some("firmware"))
        .and_then(|c| c.attribute((NS_VMW, "value")));
    let vbox = vbox_machine(system).and_then(|m| {
        m.descendants()
            .find(|n| n.tag_name().name() == "Firmware")
            .and_then(|n| n.attribute("type"))
    });
    let v = vmw.or(vbox)?.trim().to_ascii_lowercase();
    if v.starts_with("efi") {
        Some(Firmware::Uefi)
    } else if v == "bios" {
        Some(Firmware::Bios)
    } else {
        None
    }
}

/// The `vbox:Machine` element of a VirtualBox export.
fn vbox_machine<'a, 'i>(system: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    system
        .children()
        .find(|c| c.tag_name().namespace() == Some(NS_VBOX) && c.tag_name().name() == "Machine")
}

/// True when some Item (of any configuration) attaches Disk `id`.
fn attached_anywhere(hw: Node<'_, '_>, id: &str) -> bool {
    hw.children()
        .filter_map(|n| field(n, "HostResource"))
        .any(|h| host_resource(h) == Some(("disk", id)))
}

/// "SCSI Controller 0 (lsilogic)": the controller Item's name and subtype.
fn controller_label(item: &Item) -> String {
    let n = item.node;
    let name = field(n, "ElementName")
        .or_else(|| field(n, "Caption"))
        .map_or_else(
            || {
                let bus = match item.kind {
                    rt::IDE => "IDE",
                    rt::SCSI => "SCSI",
                    _ => "SATA",
                };
                format!("{bus} controller {}", field(n, "Address").unwrap_or("?"))
            },
            str::to_string,
        );
    match field(n, "ResourceSubType") {
        Some(sub) => format!("{name} ({sub})"),
        None => name,
    }
}

/// The one VirtualSystem: directly in the Envelope (`Content` in 0.9), or the
/// only one of a VirtualSystemCollection.
fn virtual_system<'a, 'i>(root: Node<'a, 'i>) -> Result<Node<'a, 'i>> {
    if let Some(s) = children(root, "VirtualSystem").next() {
        return Ok(s);
    }
    let Some(coll) = children(root, "VirtualSystemCollection").next() else {
        return Err(Error::corrupt("OVF has no VirtualSystem", 0));
    };
    let systems: Vec<Node> = coll
        .descendants()
        .filter(|n| section_kind(*n) == "VirtualSystem")
        .collect();
    match systems.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::corrupt(
            "VirtualSystemCollection holds no VirtualSystem",
            off(coll),
        )),
        many => Err(Error::unsupported(format!(
            "VirtualSystemCollection of {} VMs; v2x converts one VM at a time",
            many.len()
        ))),
    }
}

/// An element's OVF section kind: its local name, or for 0.9's generic
/// `Section`/`Content` the `xsi:type` without prefix and `_Type`.
fn section_kind<'a>(n: Node<'a, '_>) -> &'a str {
    let name = n.tag_name().name();
    if matches!(name, "Section" | "Content") {
        if let Some(t) = n.attribute((NS_XSI, "type")) {
            let t = t.rsplit(':').next().unwrap_or(t);
            return t.strip_suffix("_Type").unwrap_or(t);
        }
    }
    name
}

/// Element children of `n` whose section kind is `kind`.
fn children<'a, 'i: 'a>(n: Node<'a, 'i>, kind: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && section_kind(*c) == kind)
}

/// The trimmed text of the first child element named `local` (any namespace).
fn field<'a>(n: Node<'a, '_>, local: &str) -> Option<&'a str> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == local)
        .and_then(|c| c.text())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An Item's `VirtualQuantity` as a number.
fn quantity(n: Node<'_, '_>, what: &str) -> Result<u64> {
    let q = field(n, "VirtualQuantity")
        .ok_or_else(|| Error::corrupt(format!("{what} Item without VirtualQuantity"), off(n)))?;
    parse_u64(q).map_err(|_| {
        Error::corrupt(
            format!("{what} Item VirtualQuantity '{q}' is not a number"),
            off(n),
        )
    })
}

/// ProductSection properties by key, for `${key}` capacities.
fn properties<'a>(root: Node<'a, '_>, ns: &str) -> HashMap<&'a str, &'a str> {
    root.descendants()
        .filter(|n| n.tag_name().name() == "Property")
        .filter_map(|n| {
            let k = n.attribute((ns, "key")).or_else(|| n.attribute("key"))?;
            let v = n.attribute((ns, "value")).or_else(|| n.attribute("value"))?;
            Some((k, v))
        })
        .collect()
}

/// A node's byte offset in the descriptor, for error messages.
fn off(n: Node<'_, '_>) -> u64 {
    n.range().start as u64
}

#[cfg(test)]
mod tests;
