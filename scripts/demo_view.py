#!/usr/bin/env python3
"""Terminal views for scripts/demo.sh (standard library only).

  demo_view.py detections            JSON detection records on stdin -> one short line each
  demo_view.py status INGEST WORKER  every 5 s: cameras up, fps in/out, end-to-end p50/p99 over
                                     the last 5 s (histogram bucket bounds), worker lag
"""
import json
import sys
import time
import urllib.request


def detections():
    for line in sys.stdin:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        boxes = " ".join(
            f"{d['label']}:{d['score']:.2f}@[{','.join(str(round(v)) for v in d['bbox'])}]"
            for d in r.get("detections", [])
        )
        e2e = r.get("latency", {}).get("end_to_end_ms", 0.0)
        print(f"[detections] {r['camera_id']} seq={r['seq']} {r['status']} e2e={e2e:.0f}ms {boxes}", flush=True)


def scrape(url):
    series = {}
    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=2).read().decode()
    except OSError:
        return series
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            series[name] = float(value)
        except ValueError:
            pass
    return series


def total(series, prefix):
    return sum(v for k, v in series.items() if k == prefix or k.startswith(prefix + "{"))


def quantile(series, before, name, q):
    """Upper bucket bound of quantile q over the observations made since `before`."""
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), v - before.get(k, 0.0))
        for k, v in series.items()
        if k.startswith(name + "_bucket{")
    )
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return float("inf")


def status(ingest, worker, period=5.0):
    prev = None
    while True:
        i, w = scrape(ingest), scrape(worker)
        now = (time.time(), total(i, "panoptes_ingest_frames_total"), total(w, "panoptes_worker_records_total"), w)
        up = sum(1 for k, v in i.items() if k.startswith("panoptes_ingest_camera_up{") and v == 1)
        cams = sum(1 for k in i if k.startswith("panoptes_ingest_camera_up{"))
        if prev:
            dt = now[0] - prev[0]
            fps_in, fps_out = (now[1] - prev[1]) / dt, (now[2] - prev[2]) / dt
            name = "panoptes_worker_end_to_end_latency_seconds"
            p50, p99 = (quantile(w, prev[3], name, q) * 1000 for q in (0.5, 0.99))
            lag = total(w, "panoptes_worker_partition_lag")
            print(
                f"[status] cameras up {up}/{cams} | fps in {fps_in:.1f} out {fps_out:.1f} | "
                f"end-to-end p50 <= {p50:.0f} ms p99 <= {p99:.0f} ms | lag {lag:.0f}",
                file=sys.stderr,
                flush=True,
            )
        prev = now
        time.sleep(period)


if __name__ == "__main__":
    if sys.argv[1:2] == ["detections"]:
        detections()
    elif sys.argv[1:2] == ["status"] and len(sys.argv) == 4:
        status(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
