#!/usr/bin/python3
"""Summarises the bulk harness's raw.jsonl (benches/bulk/run.sh): results.json,
results.md and bulk.svg (gnuplot) in the same directory; with --publish DOCS,
also DOCS/bulk/{results.json,bulk.svg} and the block between the bulk markers
of DOCS/benchmarks.md. Standard library only (Debian's /usr/bin/python3)."""
import argparse, json, os, statistics, subprocess, sys, datetime

PATHS = {
    "kernel": "kernel VXLAN",
    "overlayd": "overlayd (default: backend auto, tc on both veths)",
    "overlayd-afxdp": "overlayd (AF_XDP on both ports)",
    "overlayd-tc": "overlayd (tc workload port, AF_XDP uplink)",
    "ovs": "Open vSwitch AF_XDP",
}
BEGIN, END = "<!-- bulk:begin -->", "<!-- bulk:end -->"


def load(out):
    rows = [json.loads(l) for l in open(os.path.join(out, "raw.jsonl")) if l.strip()]
    order, groups, errors = [], {}, {}
    for r in rows:
        if r["row"] not in order:
            order.append(r["row"])
        if "gbps" not in r:
            errors.setdefault(r["row"], r["error"])
            continue
        groups.setdefault((r["row"], r["streams"], r["dir"]), []).append(r)
    return rows, order, groups, errors


def med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None]
    return statistics.median(v) if v else None


def summarise(rows, order, groups, errors):
    meta = {r["row"]: r for r in rows}
    table = []
    for name in order:
        m = meta[name]
        line = {"row": name, "a": m["a"], "b": m["b"], "offloads": m["offloads"], "points": {}}
        if name in errors and not any(k[0] == name for k in groups):
            line["error"] = errors[name]
        for (n, s, d), rs in groups.items():
            if n != name:
                continue
            line["points"][f"{s}x {d}"] = {
                "gbps": med(rs, "gbps"),
                "gbps_all": [round(r["gbps"], 3) for r in rs],
                "vm_cpu_s_per_gb": med(rs, "vm_cpu_s_per_gb"),
                "path_cpu_s_per_gb": med(rs, "path_cpu_s_per_gb"),
            }
        table.append(line)
    return table


def ratios(table):
    """The issue's targets: overlayd <-> kernel against kernel <-> kernel,
    default offloads (>= 0.6) and tx off (>= 1.0), one stream A -> B."""
    by = {t["row"]: t for t in table}
    out = {}
    for ours, base, goal in (("overlayd-kernel", "kernel-kernel", 0.6),
                             ("overlayd-kernel-txoff", "kernel-kernel-txoff", 1.0),
                             ("overlayd-afxdp-kernel", "kernel-kernel", 0.6),
                             ("overlayd-afxdp-kernel-txoff", "kernel-kernel-txoff", 1.0)):
        if ours in by and base in by:
            for p in by[ours]["points"]:
                a, b = by[ours]["points"][p]["gbps"], by[base]["points"].get(p, {}).get("gbps")
                if a and b:
                    out[f"{ours} / {base}, {p}"] = {"ratio": round(a / b, 2), "target": goal}
    return out


def fmt(v, d=2):
    return "-" if v is None else f"{v:.{d}f}"


def markdown(table, rat, args):
    cols = ["1x A-B", "1x B-A", "4x A-B", "4x B-A"]
    md = [f"Bulk TCP (`benches/bulk/run.sh{' --quick' if args.mode == 'quick' else ''}`, iperf3, "
          f"workloads at MTU 1450; {args.secs} s per point, median of {args.reps}"
          f"{'; overlayd tier setting ' + args.tier if args.tier else ''}; {args.date}). "
          "Gbit/s, then CPU seconds per GB moved: whole VM / the path's processes "
          "(iperf3 both ends, overlayd, ovs-vswitchd).", "",
          "| host A | host B | workloads' offloads | " + " | ".join(cols) + " |",
          "|---|---|---|" + "---|" * len(cols)]
    for t in table:
        cells = []
        for c in cols:
            p = t["points"].get(c)
            cells.append("n/a" if not p else
                         f"{fmt(p['gbps'])} ({fmt(p['vm_cpu_s_per_gb'], 1)} / {fmt(p['path_cpu_s_per_gb'], 1)})")
        off = "tx off" if t["offloads"] == "tx-off" else "default (tx, TSO, GSO on)"
        if t["a"] == "ovs":
            off += ", as its AF_XDP documentation requires (and host B's uplink tx off)"
        if "error" in t:
            cells = [f"failed: {t['error']}"] + [""] * (len(cols) - 1)
        md.append(f"| {PATHS[t['a']]} | {PATHS[t['b']]} | {off} | " + " | ".join(cells) + " |")
    if rat:
        md += ["", "| ratio | measured | target |", "|---|---|---|"]
        for k, v in rat.items():
            md.append(f"| {k} | {v['ratio']:.2f} | >= {v['target']:.1f} |")
    return "\n".join(md) + "\n"


def plot(table, out):
    dat = os.path.join(out, "bulk.dat")
    cols = ["1x A-B", "1x B-A", "4x A-B", "4x B-A"]
    with open(dat, "w") as f:
        f.write("row " + " ".join('"%s"' % c for c in cols) + "\n")
        for t in table:
            label = f"{t['a']}-{t['b']}" + (" tx-off" if t["offloads"] == "tx-off" else "")
            vals = [t["points"].get(c, {}).get("gbps") for c in cols]
            f.write('"%s" ' % label + " ".join("0" if v is None else f"{v:.3f}" for v in vals) + "\n")
    svg = os.path.join(out, "bulk.svg")
    gp = f"""set terminal svg size 900,420 dynamic font 'sans,11'
set output '{svg}'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel 'Gbit/s'
set yrange [0:*]
set key top right
set xtics rotate by -20
set title 'Bulk TCP across a VXLAN overlay (iperf3, MTU 1450)'
plot for [i=2:5] '{dat}' using i:xtic(1) title columnheader(i)
"""
    try:
        subprocess.run(["gnuplot"], input=gp.encode(), check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"bulk: no plot ({e}); scripts/setup.sh installs gnuplot-nox", file=sys.stderr)
        return None
    return svg


def publish(docs, res, md, svg):
    d = os.path.join(docs, "bulk")
    os.makedirs(d, exist_ok=True)
    json.dump(res, open(os.path.join(d, "results.json"), "w"), indent=1)
    if svg:
        open(os.path.join(d, "bulk.svg"), "w").write(open(svg).read())
    bm = os.path.join(docs, "benchmarks.md")
    text = open(bm).read()
    block = f"{BEGIN}\n{md}\n![bulk TCP](bulk/bulk.svg)\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text += "\n## Bulk throughput: the harness (issue 21)\n\n" + block + "\n"
    open(bm, "w").write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--secs", default="?")
    ap.add_argument("--reps", default="?")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--tier")
    ap.add_argument("--publish")
    args = ap.parse_args()
    args.date = datetime.date.today().isoformat()
    rows, order, groups, errors = load(args.out)
    table = summarise(rows, order, groups, errors)
    rat = ratios(table)
    res = {"mode": args.mode, "secs": args.secs, "reps": args.reps, "tier": args.tier,
           "date": args.date, "rows": table, "ratios": rat}
    json.dump(res, open(os.path.join(args.out, "results.json"), "w"), indent=1)
    md = markdown(table, rat, args)
    open(os.path.join(args.out, "results.md"), "w").write(md)
    svg = plot(table, args.out)
    print(md)
    if args.publish:
        publish(args.publish, res, md, svg)


if __name__ == "__main__":
    main()
