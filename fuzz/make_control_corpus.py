#!/usr/bin/env python3
"""Seeds for the control-plane fuzz targets: every TOML configuration the
docs show (and its JSON form), and operation batches that touch every kind of
operation, valid and not. Run from the repository root: fuzz/make_control_corpus.py"""
import json, pathlib, re, tomllib

root = pathlib.Path(__file__).resolve().parent.parent
out = root / "fuzz/corpus"
configs = [p.read_text() for p in sorted((root / "docs/examples").glob("*.toml"))]
for md in sorted((root / "docs").glob("*.md")):
    configs += re.findall(r"```toml\n(.*?)```", md.read_text(), re.S)
n = 0
for text in configs:
    (out / "config" / f"toml-{n:02}").write_text(text)
    try:
        doc = tomllib.loads(text)
        (out / "config" / f"json-{n:02}").write_text(json.dumps(doc))
    except Exception:
        pass
    n += 1

rule = {"id": 90, "priority": 7, "match": {"in_port": "wl0", "ip_dst": "203.0.113.0/24", "l4_dst": 80},
        "actions": [{"encap": "to-hostb"}]}
tunnel = {"name": "t2", "type": "gretap", "uplink": "up0", "local": "192.0.2.1",
          "remote": "192.0.2.3", "key": 7, "next_hop_mac": "02:00:00:00:03:00"}
batches = {
    "add-rule": [{"add_rule": rule}],
    "replace-rule": [{"replace_rule": dict(rule, id=20, actions=["drop"])}],
    "remove-rule": [{"remove_rule": 20}],
    "remove-missing-rule": [{"remove_rule": 12345}],
    "tunnel-and-rule": [{"add_tunnel": tunnel}, {"add_rule": dict(rule, actions=[{"encap": "t2"}])}],
    "remove-tunnel-in-use": [{"remove_tunnel": "to-hostb"}],
    "replace-tunnel": [{"replace_tunnel": dict(tunnel, name="to-hostb", type="vxlan", vni=43, key=None)}],
    "port": [{"add_port": {"name": "wl1", "kind": "workload", "interface": "wl1"}}, {"remove_port": "wl1"}],
    "fdb": [{"add_fdb": {"vni": 42, "mac": "02:00:00:00:00:09", "tunnel": "to-hostb"}},
            {"remove_fdb": {"vni": 42, "mac": "02:00:00:00:00:09"}}],
    "flood": [{"set_flood": {"vni": 42, "tunnels": ["to-hostb"], "ports": ["wl0"]}}, {"remove_flood": 42}],
    "vf": [{"set_vf": {"pf": "pf0", "vf": 1, "mac": "02:00:00:00:00:0a", "vlan": 100}},
           {"set_num_vfs": {"pf": "pf0", "num_vfs": 4}}, {"set_offload": {"enabled": True}}],
    "bad-field": [{"add_rule": dict(rule, colour="red")}],
    "ipv6-rule": [{"add_rule": dict(rule, id=91, match={"ip_dst": "2001:db8::/32", "ethertype": 0x86dd})}],
}
for name, ops in batches.items():
    (out / "ops" / name).write_text(json.dumps(ops))
print(f"{n} configurations, {len(batches)} batches")
