"""Screenshot of Label Studio's labeling page showing a trailnb pre-annotation (for docs/).

    .venv/bin/python tools/labelstudio_screenshot.py --out docs/labelstudio_prelabel.png [--model best.pt]

What it does, all on 127.0.0.1 and in a temporary folder (nothing in the repository changes but `--out`):
1. starts a private Label Studio from its own environment (`make labelstudio-env`) with
   `trailnb.labelstudio.launch_label_studio` (no version check, Sentry or analytics);
2. creates a project with trailnb's generated labeling config and imports the squirrel sample frames as local
   files (Local Storage);
3. serves a detector with the trailnb backend and connects it: `--model` if given, else it first trains a small
   one on the 14 frames (`--epochs`, 320 px, from scratch: about 40 epochs before it finds the squirrel, minutes
   on a GPU, an hour or more on 2 busy CPU cores); `--epochs 0` serves an untrained one (noise boxes; what
   docs/labelstudio_prelabel.png shows, taken on a shared 2-core machine);
4. asks Label Studio for predictions (the Data Manager's Retrieve Predictions action) and checks the chosen
   task's prediction carries the backend's model version;
5. runs a Node script with `playwright-core` driving headless Chromium (`/usr/bin/chromium`, fresh profile, every
   request off 127.0.0.1 aborted and counted): logs in, opens the task in the labeling page, waits for the image
   and the pre-annotation's region, and takes the screenshot;
6. always stops the backend and Label Studio.

Exit 1 if the task got no prediction with the backend's version, the page lists no region, or the browser tried
to leave 127.0.0.1.

Needs: Node 18+ and `playwright-core` outside the repo (`mkdir -p /tmp/jlshot && cd /tmp/jlshot && npm install
playwright-core`, or `--node-modules DIR`), Chromium (`apt-get install chromium`, or `--chromium PATH`), the
squirrels sample data (TRAILNB_SAMPLE_DATA) and Label Studio's environment.
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


def _train_model(sq: Path, out: Path, epochs: int) -> Path:
    from trailnb.train import train
    if epochs == 0:  # an untrained detector: its boxes are noise, but they travel the same way
        from trailnb.core import seed_everything
        from trailnb.models import build_detector
        seed_everything(0); out.mkdir(parents=True, exist_ok=True)
        return build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", ["animal", "person", "vehicle"], max_dim=320,
                              device="cpu").save(out / "untrained.pt")
    print(f"training a small detector on the 14 squirrel frames ({epochs} epochs at 320 px) ...", flush=True)
    res = train(data=str(sq / "data.yaml"), split="none", arch="fasterrcnn_mobilenet_v3_large_320_fpn", max_dim=320,
                epochs=epochs, lr=0.02, batch_size=2, warmup_epochs=2, workers=0, seed=0, out=str(out), name="squirrels",
                progress=False, device="cpu")
    return res.run_dir / "best.pt"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/labelstudio_prelabel.png")
    p.add_argument("--model", default=None, help="a trailnb checkpoint with class 'animal' (default: train one)")
    p.add_argument("--epochs", type=int, default=25, help="epochs when training the model here (0: an untrained model)")
    p.add_argument("--score-thresh", type=float, default=0.05, help="the backend's score threshold")
    p.add_argument("--max-boxes", type=int, default=2, help="at most this many pre-annotated boxes")
    p.add_argument("--node-modules", default=os.environ.get("JLSHOT_NODE_MODULES", "/tmp/jlshot/node_modules"))
    p.add_argument("--chromium", default=os.environ.get("JLSHOT_CHROMIUM", "/usr/bin/chromium"))
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=900)
    a = p.parse_args(argv)
    from trailnb.core import sample_data_dir
    from trailnb.labelstudio import (LabelStudioBackend, add_local_storage, connect_ml_backend, create_project,
                                     launch_label_studio, start_server)
    sq = sample_data_dir("squirrels")
    if sq is None: print("squirrels sample data not found (TRAILNB_SAMPLE_DATA)"); return 1
    tmp = Path(tempfile.mkdtemp(prefix="trailnb-ls-shot-"))
    model = Path(a.model) if a.model else _train_model(sq, tmp / "runs", a.epochs)
    ls = launch_label_studio(tmp / "label-studio", document_root=sq.parent)
    print(f"Label Studio {ls.url} started in {ls.startup_s} s", flush=True)
    srv = None
    try:
        client = ls.client()
        pid = create_project(client, "Squirrel burst (trailnb pre-labels)", ["animal", "person", "vehicle"])
        add_local_storage(client, pid, sq / "images" / "train")
        tasks = client.json("GET", "/api/tasks", params={"project": pid, "page_size": 100})["tasks"]
        backend = LabelStudioBackend(model=str(model), workdir=str(tmp / "backend"), data_roots=[str(sq.parent)],
                                     label_studio_url=ls.url, api_key=ls.api_key, score_thresh=a.score_thresh, max_boxes=a.max_boxes, device="cpu")
        srv = start_server(backend)
        connect_ml_backend(client, pid, srv.url)
        task = tasks[len(tasks) // 2]
        client.json("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": pid},
                    json={"selectedItems": {"all": False, "included": [task["id"]]}})
        preds = client.json("GET", "/api/predictions", params={"task": task["id"]})
        ok_pred = bool(preds) and preds[0]["model_version"] == backend.version and preds[0]["result"]
        print(f"task {task['id']}: {len(preds[0]['result']) if preds else 0} pre-annotated box(es), version "
              f"{preds[0]['model_version'] if preds else None} (backend {backend.version})", flush=True)
        cfg = {"playwright": str(Path(a.node_modules) / "playwright-core"), "chromium": a.chromium, "base": ls.url,
               "email": ls.username, "password": ls.password, "project": pid, "task": task["id"], "label": "animal",
               "out": str(Path(a.out).resolve()), "result": str(tmp / "browser.json"), "user_data_dir": str(tmp / "chrome"),
               "width": a.width, "height": a.height, "timeout_ms": 120000}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "shot.js").write_text(NODE_SCRIPT)
        subprocess.run(["node", str(tmp / "shot.js"), json.dumps(cfg)], check=False, timeout=600)
        res = json.loads((tmp / "browser.json").read_text())
        print(json.dumps(res, indent=1))
        ok = ok_pred and res["checks"].get("region_listed") and not res["blocked"] and "error" not in res
        print(("OK" if ok else "FAILED") + f": {a.out}")
        return 0 if ok else 1
    finally:
        if srv is not None: srv.stop()
        ls.stop()


if __name__ == "__main__":
    sys.exit(main())
