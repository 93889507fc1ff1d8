#!/bin/bash
# Packs streamOptimized VMDKs into an OVA the way VMware's exporters do: a
# ustar archive holding NAME.ovf (OVF 1.0 with VMware's extensions), NAME.mf
# (SHA256 of every other member) and the disks, in that order.
#
# Usage: make-ova.sh OUT.ova NAME DISK.vmdk [DISK.vmdk ...]
# Environment: OVA_FIRMWARE=bios|efi (default bios), OVA_MEMORY_MB (1024),
#   OVA_CPUS (2), OVA_MAC (00:50:56:9a:00:01, the first NIC's address),
#   OVA_NETWORK ("VM Network"), OVA_OSTYPE (debian12_64Guest).
# Disks must be streamOptimized VMDKs (qemu-img convert -O vmdk -o
# subformat=streamOptimized); their capacity comes from qemu-img info.
set -euo pipefail
out=${1:?usage: make-ova.sh OUT.ova NAME DISK.vmdk...}
name=${2:?usage: make-ova.sh OUT.ova NAME DISK.vmdk...}
shift 2
[ $# -ge 1 ] || { echo "make-ova.sh: no disks" >&2; exit 2; }
firmware=${OVA_FIRMWARE:-bios}
memory=${OVA_MEMORY_MB:-1024}
cpus=${OVA_CPUS:-2}
mac=${OVA_MAC:-00:50:56:9a:00:01}
network=${OVA_NETWORK:-VM Network}
ostype=${OVA_OSTYPE:-debian12_64Guest}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
files="" disks="" items="" n=0 inst=10
for d in "$@"; do
    n=$((n + 1))
    member="$name-disk$n.vmdk"
    cp --reflink=auto "$d" "$work/$member"
    size=$(stat -c %s "$d")
    cap=$(qemu-img info --output=json "$d" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    files+="    <File ovf:href=\"$member\" ovf:id=\"file$n\" ovf:size=\"$size\"/>
"
    disks+="    <Disk ovf:capacity=\"$cap\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk$n\" ovf:fileRef=\"file$n\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>
"
    inst=$((inst + 1))
    items+="      <Item>
        <rasd:AddressOnParent>$((n - 1))</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk $n</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk$n</rasd:HostResource>
        <rasd:InstanceID>$inst</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
"
done

cat > "$work/$name.ovf" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-v2x-test" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
$files  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
$disks  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="$network">
      <Description>The $network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="$name">
    <Info>A virtual machine</Info>
    <Name>$name</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="$ostype">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>$name</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>$cpus virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>$cpus</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>${memory}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>$memory</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
$items      <Item>
        <rasd:Address>$mac</rasd:Address>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>$network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>9</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="$firmware"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
EOF

members=("$name.ovf")
for ((i = 1; i <= n; i++)); do members+=("$name-disk$i.vmdk"); done
( cd "$work" && for m in "${members[@]}"; do
    printf 'SHA256(%s)= %s\n' "$m" "$(sha256sum "$m" | cut -d' ' -f1)"
  done ) > "$work/$name.mf"
tar --format=ustar --owner=0 --group=0 --mtime=@1700000000 -C "$work" \
    -cf "$out" "$name.ovf" "$name.mf" "${members[@]:1}"
