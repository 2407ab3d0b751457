"""The tables `robot-emotion bench` prints (cli/bench.py measures, this formats).

One row per configuration: replay real-time factor, latencies (median / p95, and as multiples
of the stock faster-whisper median), per-stage times, memory; with a live run (--live,
--contention) the paced replay beside the live node, with its lag and what it shed.
"""

from __future__ import annotations

import os

import numpy as np


def _mb(mem: dict | None, key: str) -> str:
    return f"{mem[key]:.0f}" if mem and key in mem else "-"


def format_table(rows: list[dict], source: str, reference: dict | None = None, contention: str = "none") -> str:
    out = [
        f"# robot-emotion bench — {source}",
        f"# {os.cpu_count()} CPU cores; medians unless noted; other load on the machine: {contention}",
        "",
    ]
    out.append(
        "| config | replay RTF (median, --speed max) | speech.end latency ms (median / p95) "
        "| first emotion of a turn ms (early estimate) | first on the whole transcript ms "
        "| final emotion of a turn ms | final utterance ms | peak RSS MB "
        "| node peak RSS / anon RSS / PSS MB | emotion model |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            out.append(f"| {r['config']} | error: {r['error']} | | | | | | | | |")
            continue
        lat = r["latency"]

        def fmt(topic):
            return f"{lat[topic][0]:.1f} / {lat[topic][1]:.1f} (n={lat[topic][2]})" if topic in lat else "-"

        node = (r.get("memory") or {}).get("node")
        model = r.get("model") or {}
        out.append(
            f"| {r['config']} | {np.median(r['rtf']):.4f} (runs: {', '.join(f'{x:.4f}' for x in r['rtf'])}) "
            f"| {fmt('speech.end')} | {fmt('emotion first')} | {fmt('emotion first full')} "
            f"| {fmt('emotion final')} "
            f"| {fmt('utterance final')} | {r['peak_rss_mb']:.0f} "
            f"| {_mb(node, 'rss_mb')} / {_mb(node, 'anon_mb')} / {_mb(node, 'pss_mb')} "
            f"| {model.get('id', '-')} |"
        )
    out += [
        "",
        "| config | node CPU share at recorded pace (of all cores) | final emotion p95 ms, first / second "
        "half of the run | first emotion p95 ms, first / second half |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if "error" not in r:
            hv = r.get("latency_halves_p95") or {}
            cell = [
                " / ".join(f"{x:.0f}" for x in hv[k]) if k in hv else "-" for k in ("emotion final", "emotion first")
            ]
            out.append(f"| {r['config']} | {100 * r.get('paced_cpu_share', 0):.0f} % | {cell[0]} | {cell[1]} |")
    out += _load_lines(rows)
    out += _reference_lines(rows, reference)
    out += ["", "| config | stage | median ms | p95 ms | calls |", "|---|---|---|---|---|"]
    for r in rows:
        for name, (med, p95, n) in r.get("stages", {}).items():
            out.append(f"| {r['config']} | {name} | {med:.2f} | {p95:.2f} | {n} |")
    out += ["", "| config | anonymous RSS by mapping at the end of the first replay (MB) |", "|---|---|"]
    for r in rows:
        node = (r.get("memory") or {}).get("node") or {}
        if node.get("anon_by_mapping"):
            out.append(
                f"| {r['config']} | "
                + ", ".join(f"{os.path.basename(n)} {mb:.0f}" for n, mb in node["anon_by_mapping"])
                + " |"
            )
    return "\n".join(out)


def _load_lines(rows: list[dict]) -> list[str]:
    """With a live run (--live, --contention): the paced replay (never sheds) beside it (sheds, node/load.py)."""
    if not any("live" in r for r in rows):
        return []
    out = [
        "",
        "| config | at recorded pace | first emotion ms median / p95 (no emotion: utterance) | final emotion ms median / p95 "
        "| final emotion p95, first / second half | lag ms: peak / p95 of the 1 Hz status | shed items: partial, "
        "incremental, faces (seconds shed) | skipped (backlog): provisional, partial, incremental |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            continue
        for run, part in (
            (
                "replay (never sheds)",
                {
                    "latency": r["latency"],
                    "latency_halves_p95": r.get("latency_halves_p95", {}),
                    "load": r.get("paced_load"),
                },
            ),
            ("live semantics", r.get("live")),
        ):
            if not part:
                continue
            if "error" in part:
                out.append(f"| {r['config']} | {run} | error: {part['error']} | | | | | |")
                continue
            lat, hv, ld = part["latency"], part.get("latency_halves_p95") or {}, part.get("load") or {}

            def fmt(k):  # (no emotion stage: the utterance's)
                k = k if k in lat else k.replace("emotion", "utterance")
                return f"{lat[k][0]:.0f} / {lat[k][1]:.0f}" if k in lat else "-"

            lags = part.get("status_lag_ms") or []
            lag = f"{ld.get('peak_lag_ms', 0):.0f} / " + (f"{np.percentile(lags, 95):.0f}" if lags else "-")
            shed, shed_s = ld.get("shed") or {}, ld.get("shed_s") or {}
            sheds = ", ".join(
                f"{shed.get(k, 0)} ({shed_s.get(k, 0):.0f} s)" for k in ("partial", "incremental", "faces")
            )
            sk = part.get("skipped")
            skipped = ", ".join(str(sk.get(k, 0)) for k in ("provisional", "partial", "incremental")) if sk else "-"
            hk = "emotion final" if "emotion final" in hv else "utterance final"
            half = " / ".join(f"{x:.0f}" for x in hv[hk]) if hk in hv else "-"
            out.append(
                f"| {r['config']} | {run} | {fmt('emotion first')} | {fmt('emotion final')} | {half} | {lag} "
                f"| {sheds} | {skipped} |"
            )
    return out


def _reference_lines(rows: list[dict], reference: dict | None) -> list[str]:
    if not reference:
        return []
    if "error" in reference:
        return ["", f"# reference (stock faster-whisper): error: {reference['error']}"]
    ref = reference["median_ms"]
    out = [
        "",
        "| reference | median ms | p95 ms | calls | segments (median s) |",
        "|---|---|---|---|---|",
        f"| stock faster-whisper `WhisperModel.transcribe` (30 s window, beam 5, temperature 0; "
        f"{reference['model_name']}, {reference['device']}) "
        f"| {ref:.1f} | {reference['p95_ms']:.1f} | {reference['n']} "
        f"| {reference['segments']} ({reference['segment_s_median']:.1f} s) |",
        "",
        f"| config | latency as a multiple of the stock faster-whisper median ({ref:.0f} ms): "
        "speech.end | first emotion | first on the whole transcript | final emotion | final utterance |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = r.get("latency_ratio") or {}
        cells = [
            f"{q[k][0]:.3g}x / {q[k][1]:.3g}x" if k in q else "-"
            for k in ("speech.end", "emotion first", "emotion first full", "emotion final", "utterance final")
        ]
        if "error" not in r:
            out.append(f"| {r['config']} | " + " | ".join(cells) + " |")
    return out
