"""Screenshot of Label Studio's labeling page showing trailnb pre-labels (for docs/).

    .venv/bin/python tools/labelstudio_screenshot.py --out docs/labelstudio_prelabel.png            # pushed MegaDetector results
    .venv/bin/python tools/labelstudio_screenshot.py --model best.pt --out shot.png                 # a served trailnb model

What it does, all on 127.0.0.1 and in a temporary folder (nothing in the repository changes but `--out`):
1. starts Label Studio from its own environment (`make labelstudio-env`) the way `trailnb label-studio start
   --data-roots` does (`launch_label_studio`: no version check, Sentry or analytics);
2. makes a project from a folder of photos as `trailnb label-studio project --photos` does (`photo_project`);
3. pre-labels it: by default `trailnb label-studio push` of the camtrap31 sample's real MegaDetector v5 results
   (MegaDetector's sorting threshold 0.2, at most 20 boxes a photo); with `--model`, the trailnb backend serving
   that checkpoint on the squirrel frames, connected as `trailnb label-studio connect` does, and Label Studio's
   Retrieve Predictions action;
4. runs a Node script with `playwright-core` driving headless Chromium (`/usr/bin/chromium`, fresh profile, every
   request off 127.0.0.1 aborted and counted): logs in, opens the task in the labeling page, waits for the image
   and the pre-label's region, and takes the screenshot;
5. always stops the backend and Label Studio.

Exit 1 if the task has no pre-label, the page lists no region, or the browser tried to leave 127.0.0.1.

Needs: Node 18+ and `playwright-core` outside the repo (`mkdir -p /tmp/jlshot && cd /tmp/jlshot && npm install
playwright-core`, or `--node-modules DIR`), Chromium (`apt-get install chromium`, or `--chromium PATH`), the
sample data (TRAILNB_SAMPLE_DATA) and Label Studio's environment.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

NODE_SCRIPT = r"""
const cfg = JSON.parse(process.argv[2]);
const { chromium } = require(cfg.playwright);
const res = { blocked: [], console_errors: [], checks: {} };
const T = cfg.timeout_ms;
(async () => {
  const ctx = await chromium.launchPersistentContext(cfg.user_data_dir, {
    executablePath: cfg.chromium, headless: true, viewport: { width: cfg.width, height: cfg.height },
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    await ctx.route('**/*', route => {
      const u = new URL(route.request().url());
      if (['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol) && u.hostname !== '127.0.0.1') {
        res.blocked.push(route.request().url()); return route.abort();
      }
      return route.continue();
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.on('pageerror', e => res.console_errors.push(String(e).slice(0, 300)));
    await page.goto(`${cfg.base}/user/login/`, { waitUntil: 'domcontentloaded', timeout: T });
    await page.fill('input[name="email"]', cfg.email);
    await page.fill('input[name="password"]', cfg.password);
    await Promise.all([page.waitForNavigation({ timeout: T }).catch(() => {}), page.click('button[type="submit"], input[type="submit"]')]);
    await page.goto(`${cfg.base}/projects/${cfg.project}/data?task=${cfg.task}`, { waitUntil: 'domcontentloaded', timeout: T });
    // the labeling page: the image, then the pre-annotation's region in the canvas and the regions list
    await page.waitForSelector('img[src*="local-files"], canvas', { timeout: T });
    await page.waitForFunction(l => document.body.innerText.includes(l), cfg.label, { timeout: T }).catch(() => {});
    await page.waitForTimeout(3000);
    const text = await page.evaluate(() => document.body.innerText);
    res.checks.label_shown = text.includes(cfg.label);
    res.checks.region_listed = !text.includes('Labeled regions will appear here');  // the Regions panel is not empty
    res.checks.canvas = (await page.$$('canvas')).length;
    await page.screenshot({ path: cfg.out });
  } catch (e) { res.error = String(e).slice(0, 500); }
  finally { await ctx.close(); require('fs').writeFileSync(cfg.result, JSON.stringify(res, null, 1)); }
})();
"""


def _pushed_task(client, data: Path, pid: int) -> tuple[int, str]:
    "Push camtrap31's MegaDetector results; the task whose pre-labels read best (1-3 boxes, the largest), its label."
    from trailnb.labelstudio import push
    cam = data / "camtrap31"
    summary = push(cam / "megadetector_v5_results.json", pid, client=client, image_root=cam / "images", data_roots=[data],
                   model_version="megadetector-v5")
    print("pushed:", summary, flush=True)
    preds = client.json("GET", "/api/predictions", params={"project": pid})
    area = lambda p: max(r["value"]["width"] * r["value"]["height"] for r in p["result"])
    best = max((p for p in preds if 1 <= len(p["result"]) <= 3), key=area)
    return best["task"], best["result"][0]["value"]["rectanglelabels"][0]


def _served_task(client, ls, sq: Path, pid: int, model: Path, a, tmp: Path):
    "Serve `model` on the squirrel frames, connect it, retrieve one task's predictions; (task, label, server)."
    from trailnb.labelstudio import LabelStudioBackend, connect_ml_backend, start_server
    tasks = client.json("GET", "/api/tasks", params={"project": pid, "page_size": 100})["tasks"]
    backend = LabelStudioBackend(model=str(model), workdir=str(tmp / "backend"), data_roots=[str(sq.parent)], label_studio_url=ls.url,
                                 api_key=ls.api_key, score_thresh=a.score_thresh, max_boxes=a.max_boxes, device="cpu")
    srv = start_server(backend)
    connect_ml_backend(client, pid, srv.url)
    task = tasks[len(tasks) // 2]
    client.json("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                json={"selectedItems": {"all": False, "included": [task["id"]]}})
    preds = client.json("GET", "/api/predictions", params={"task": task["id"]})
    ok = bool(preds) and preds[0]["model_version"] == backend.version and preds[0]["result"]
    return (task["id"] if ok else None), (preds[0]["result"][0]["value"]["rectanglelabels"][0] if ok else "animal"), srv


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/labelstudio_prelabel.png")
    p.add_argument("--model", default=None, help="serve this trailnb checkpoint on the squirrel frames (default: push camtrap31's MegaDetector results)")
    p.add_argument("--score-thresh", type=float, default=None, help="with --model: the backend's threshold (default: the model's sorting threshold)")
    p.add_argument("--max-boxes", type=int, default=5, help="with --model: at most this many pre-labels")
    p.add_argument("--node-modules", default=os.environ.get("JLSHOT_NODE_MODULES", "/tmp/jlshot/node_modules"))
    p.add_argument("--chromium", default=os.environ.get("JLSHOT_CHROMIUM", "/usr/bin/chromium"))
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=900)
    a = p.parse_args(argv)
    from trailnb.core import sample_data_dir
    from trailnb.labelstudio import launch_label_studio, photo_project
    data = sample_data_dir()
    if data is None: print("sample data not found (TRAILNB_SAMPLE_DATA)"); return 1
    tmp = Path(tempfile.mkdtemp(prefix="trailnb-ls-shot-"))
    ls = launch_label_studio(tmp / "label-studio", document_root=data, port=0)
    print(f"Label Studio {ls.url} started in {ls.startup_s} s", flush=True)
    srv = None
    try:
        client = ls.client()
        if a.model:
            pid = photo_project(data / "squirrels" / "images" / "train", ["animal", "person", "vehicle"], "Squirrel burst (trailnb backend)",
                                client=client, document_root=data)["project"]
            task, label, srv = _served_task(client, ls, data / "squirrels", pid, Path(a.model), a, tmp)
        else:
            pid = photo_project(data / "camtrap31" / "images", ["animal", "person", "vehicle"], "Camera traps (MegaDetector pre-labels)",
                                client=client, document_root=data)["project"]
            task, label = _pushed_task(client, data, pid)
        print(f"project {pid}, task {task}: pre-labelled {label!r}", flush=True)
        if task is None: return 1
        cfg = {"playwright": str(Path(a.node_modules) / "playwright-core"), "chromium": a.chromium, "base": ls.url,
               "email": ls.username, "password": ls.password, "project": pid, "task": task, "label": label,
               "out": str(Path(a.out).resolve()), "result": str(tmp / "browser.json"), "user_data_dir": str(tmp / "chrome"),
               "width": a.width, "height": a.height, "timeout_ms": 120000}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "shot.js").write_text(NODE_SCRIPT)
        subprocess.run(["node", str(tmp / "shot.js"), json.dumps(cfg)], check=False, timeout=600)
        res = json.loads((tmp / "browser.json").read_text())
        print(json.dumps(res, indent=1))
        ok = res["checks"].get("region_listed") and not res["blocked"] and "error" not in res
        print(("OK" if ok else "FAILED") + f": {a.out}")
        return 0 if ok else 1
    finally:
        if srv is not None: srv.stop()
        ls.stop()


if __name__ == "__main__":
    sys.exit(main())
