#!/usr/bin/env python3
"""Writes the wire fuzzers' seed corpus (fuzz/seeds/<target>/) from the byte fixtures of
crates/wire's tests (checked there against OpenSM's headers, the IBA and the RFCs), and
whole SA MADs assembled from them: MAD header + SA header + record, 256 bytes.

    python3 scripts/fuzz-seeds.py . fuzz/seeds

The control-plane target's seeds (fuzz/seeds/ctrl) are written by
`cargo test -p ibpoll-simtest --test ctrl_fuzz -- --ignored`.
"""
import re, os, sys
root = sys.argv[1]
def fixtures(path):
    src = open(os.path.join(root, path)).read()
    # only the test module
    i = src.find('#[cfg(test)]')
    src = src[i:] if i >= 0 else src
    out = {}
    for m in re.finditer(r'const (\w+): \[u8; [^\]]+\] = \[(.*?)\];', src, re.S):
        body = re.sub(r'//[^\n]*', '', m.group(2))
        toks = [t.strip() for t in body.replace('\n', ' ').split(',') if t.strip()]
        try:
            vals = [int(t, 0) for t in toks]
        except ValueError:
            continue
        out[m.group(1)] = bytes(vals)
    return out
f = {k: fixtures(f'crates/wire/src/{k}.rs') for k in ['arp','bth','deth','grh','ipoib','lrh','mad','mcmember','path_record']}
for k, v in f.items():
    print(k, {n: len(b) for n, b in v.items()}, file=sys.stderr)
seeds = {}
def add(target, name, data):
    seeds.setdefault(target, []).append((name, data))
add('arp', 'request', f['arp']['REQUEST'])
for n in ['CNP', 'UC', 'UD_MCAST']: add('bth', n.lower(), f['bth'][n])
for n in ['IPOIB', 'GSI']: add('deth', n.lower(), f['deth'][n])
add('grh', 'fixture', f['grh']['FIXTURE'])
for n in ['IPV4_HDR', 'ARP_HDR', 'IPV6_HDR']: add('ipoib', n.lower(), f['ipoib'][n])
# The 8-byte header alone: shorter than the packet length it names (a refused input).
add('lrh', 'header_only_truncated', f['lrh']['FIXTURE'])
# An LRH in front of the GRH, BTH, DETH and an IPoIB ARP: a whole UD frame (no CRCs).
add('lrh', 'ud_frame', f['lrh']['FIXTURE'] + f['grh']['FIXTURE'] + f['bth']['UD_MCAST'] + f['deth']['IPOIB'] + f['ipoib']['ARP_HDR'] + f['arp']['REQUEST'])
mad_hdr = f['mad']['GET_PATH_RECORD']
add('mad', 'get_path_record_header', mad_hdr)
def sa_mad(hdr, attr_id, comp_mask, record, method=None):
    h = bytearray(hdr)
    h[16:18] = attr_id.to_bytes(2, 'big')
    if method is not None:
        h[3] = method
    sa = bytearray(32)  # RMPP (12) + SM_Key (8) + attr offset (2) + reserved (2) + mask (8)
    sa[20:22] = ((len(record) + 7) // 8).to_bytes(2, "big")
    sa[24:32] = comp_mask.to_bytes(8, 'big')
    m = bytes(h) + bytes(sa) + record
    return m + bytes(256 - len(m))
mc = f['mcmember']['OPENSM_BROADCAST']
pr = f['path_record']['OPENSM_PATH']
get_pr = sa_mad(mad_hdr, 0x0035, 0x0000_0000_0000_100c, pr)
set_mc = sa_mad(mad_hdr, 0x0038, 0x0000_0000_0001_00c3, mc, method=0x02)
resp_mc = sa_mad(mad_hdr, 0x0038, 0x0000_0000_0001_00c3, mc, method=0x81)
del_mc = sa_mad(mad_hdr, 0x0038, 0x0000_0000_0001_0003, mc, method=0x15)
add('mad', 'sa_get_path_record', get_pr)
add('mad', 'sa_set_mcmember', set_mc)
for n, b in [('get_path_record', get_pr), ('set_mcmember', set_mc), ('getresp_mcmember', resp_mc), ('delete_mcmember', del_mc)]:
    add('sa', n, b)
add('mcmember', 'opensm_broadcast', mc)
add('path_record', 'opensm_path', pr)
out = sys.argv[2]
for t, items in seeds.items():
    d = os.path.join(out, t)
    os.makedirs(d, exist_ok=True)
    for n, b in items:
        open(os.path.join(d, n), 'wb').write(b)
    print(t, [(n, len(b)) for n, b in items])
