"""Prove that JupyterLab starts offline with the project's kernel and that trailnb's ipywidgets render.

    .venv/bin/python tools/jupyterlab_screenshot.py --out docs/jupyterlab_widgets.png

What it does, all on 127.0.0.1 and in a temporary folder (nothing in the repository changes but `--out`):
1. writes a notebook that builds a small synthetic dataset, shows `trailnb.review.threshold_explorer` and a
   plain `ipywidgets.IntSlider` (a control);
2. starts JupyterLab from this interpreter on a free port, with a token, isolated Jupyter config/data/settings
   folders, no update check, no news, read-only extension manager;
3. runs a Node script with `playwright-core` driving headless Chromium (`/usr/bin/chromium`, fresh profile,
   every request that is not to 127.0.0.1 aborted and counted): opens the notebook under /lab/tree, runs
   Run -> Run All Cells, waits for the widgets and an idle kernel, moves the threshold slider with the keyboard,
   waits for the redraw, takes the screenshot and checks the page;
4. always shuts JupyterLab down.

Checks (exit 1 if any fails): the kernel shown is the project's ("Python 3 (ipykernel)", and the kernel's
`sys.executable` is this interpreter), `.jupyter-widgets` and both sliders are rendered, the explorer shows a
figure and its precision/recall text follows the slider, no "Error displaying widget" / "Model not found" /
"Loading widget..." text, no traceback, and the browser made no request off 127.0.0.1.

Needs: Node 18+ and `playwright-core` installed outside the repo (`mkdir -p /tmp/jlshot && cd /tmp/jlshot &&
npm install playwright-core`; other folder: `--node-modules DIR` or `$JLSHOT_NODE_MODULES`), and Chromium
(`apt-get install chromium`; other binary: `--chromium PATH` or `$JLSHOT_CHROMIUM`). Do not run
`npx playwright install`: no browser download is needed.
"""
from __future__ import annotations
import argparse, json, os, secrets, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

KERNEL_DISPLAY = "Python 3 (ipykernel)"  # display_name of the `python3` kernelspec in the venv

def _code(src: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src.strip("\n")}

NOTEBOOK_CELLS = [
    {"cell_type": "markdown", "metadata": {}, "source": "# trailnb widgets in JupyterLab (offline check)"},
    _code("""
import sys, numpy as np, ipywidgets, trailnb
from trailnb.data import load_coco
from trailnb.synthetic import make_synthetic_dataset
from trailnb.core import Detections
from trailnb.review import threshold_explorer
"""),
    _code("""
ds = load_coco(make_synthetic_dataset('syn', n=8, seed=0))
rng = np.random.default_rng(0)
# predictions: every ground-truth box (a true positive) plus one shifted copy per image (a false positive), random scores
preds = [Detections(np.concatenate([r.boxes, r.boxes[:1] + 15]) if len(r.boxes) else np.zeros((0, 4)),
                    rng.uniform(0.2, 1.0, len(r.boxes) + (1 if len(r.boxes) else 0)),
                    np.concatenate([r.labels, r.labels[:1]]) if len(r.boxes) else np.zeros(0))
         for r in ds.images]
print(len(ds.images), "images,", sum(len(p) for p in preds), "predictions")
"""),
    _code("threshold_explorer(ds, preds, thresh=0.5, n_images=3)"),
    _code("""
# control: a plain ipywidgets slider; and which Python the kernel runs
print("kernel python:", sys.executable, "| trailnb", trailnb.__version__, "| ipywidgets", ipywidgets.__version__)
ipywidgets.IntSlider(value=3, description='control')
"""),
]

# The browser side. Config comes in as JSON in argv[2]; results go to the JSON file named in the config.
NODE_SCRIPT = r"""
const fs = require('fs');
const cfg = JSON.parse(process.argv[2]);
const { chromium } = require(cfg.playwright);
const log = (...a) => console.log('[browser]', ...a);
const res = { checks: {}, blocked: [], console_errors: [], notes: [] };
const check = (name, ok, detail) => { res.checks[name] = { ok: !!ok, detail: detail === undefined ? null : detail };
                                      log((ok ? 'PASS ' : 'FAIL ') + name + (detail !== undefined ? ': ' + JSON.stringify(detail) : '')); };
const T = cfg.timeout_ms;

async function kernelIdle(page, timeout = T) {
  // the notebook toolbar's execution indicator says data-status="idle" and no cell shows [*]
  await page.waitForFunction(() => {
    const ind = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
    const busy = [...document.querySelectorAll('.jp-InputArea-prompt')].some(p => p.textContent.includes('*'));
    return ind && ind.getAttribute('data-status') === 'idle' && !busy;
  }, null, { timeout });
}

(async () => {
  const ctx = await chromium.launchPersistentContext(cfg.user_data_dir, {
    executablePath: cfg.chromium, headless: true, viewport: { width: cfg.width, height: cfg.height },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  try {
    // offline: the page may talk to the JupyterLab server only
    await ctx.route('**/*', route => {
      const u = new URL(route.request().url());
      if (['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol) && u.hostname !== '127.0.0.1') {
        res.blocked.push(route.request().url()); return route.abort();
      }
      return route.continue();
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.on('console', m => { if (m.type() === 'error') res.console_errors.push(m.text().slice(0, 300)); });
    page.on('pageerror', e => res.console_errors.push('pageerror: ' + String(e).slice(0, 300)));

    const url = `${cfg.base}/lab/tree/${cfg.notebook}?token=${cfg.token}`;
    log('open', url.replace(cfg.token, '***'));
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: T });
    await page.waitForSelector('.jp-NotebookPanel .jp-Notebook', { timeout: T });
    await page.waitForFunction(k => [...document.querySelectorAll('.jp-Toolbar-kernelName')]
                               .some(e => e.textContent.includes(k)), cfg.kernel_display, { timeout: T }).catch(() => {});
    await kernelIdle(page);
    // room for the notebook: collapse the left sidebar (file browser) if it is open
    const leftOpen = await page.$('#jp-left-stack:not(.lm-mod-hidden)');
    if (leftOpen) { await page.click('.jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current').catch(() => {}); }

    log('Run -> Run All Cells');
    await page.click('.lm-MenuBar-item:has-text("Run")');
    await page.click('.lm-Menu-item:has(.lm-Menu-itemLabel:text-is("Run All Cells"))');
    await page.waitForFunction(() => document.querySelectorAll('.widget-slider').length >= 2, null, { timeout: T });
    await page.waitForSelector('.widget-vbox .jp-OutputArea-output img', { timeout: T });
    await kernelIdle(page);

    const stats = page.locator('.widget-vbox .widget-html-content').first();
    const before = (await stats.textContent()) || '';
    log('stats before:', before.trim());
    // move the threshold slider with the keyboard: focus its handle, arrow keys (one step each)
    const handle = page.locator('.widget-vbox .widget-slider .noUi-handle').first();
    await handle.scrollIntoViewIfNeeded();
    await handle.focus();
    for (let i = 0; i < cfg.arrow_presses; i++) await page.keyboard.press('ArrowRight');
    await handle.blur().catch(() => {});
    const moved = await page.waitForFunction(b => {
      const s = document.querySelector('.widget-vbox .widget-html-content');
      return s && s.textContent.trim() !== b.trim() && s.textContent.includes('threshold');
    }, before, { timeout: T }).then(() => true).catch(() => false);
    await kernelIdle(page);
    await page.waitForSelector('.widget-vbox .jp-OutputArea-output img', { timeout: T });
    const after = (await stats.textContent()) || '';
    log('stats after:', after.trim());

    // scroll so the dataset cell, the explorer and the control are in view; let images settle
    await page.locator('.widget-vbox').first().evaluate(e => {
      const cell = e.closest('.jp-Cell'); (cell.previousElementSibling || cell).scrollIntoView({ block: 'start' }); });
    await page.evaluate(() => Promise.all([...document.querySelectorAll('img')].map(i => i.decode().catch(() => {}))));
    await page.waitForTimeout(500);
    await page.screenshot({ path: cfg.out, fullPage: true });
    log('screenshot', cfg.out);

    // checks on the page
    const d = await page.evaluate(() => {
      const txt = document.body.innerText;
      const outs = [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText);
      const img = document.querySelector('.widget-vbox .jp-OutputArea-output img');
      return {
        kernel_names: [...document.querySelectorAll('.jp-Toolbar-kernelName')].map(e => e.textContent.trim()),
        kernel_status: (document.querySelector('.jp-Notebook-ExecutionIndicator') || {}).getAttribute?.('data-status'),
        n_widgets: document.querySelectorAll('.jupyter-widgets').length,
        n_sliders: document.querySelectorAll('.widget-slider').length,
        slider_readouts: [...document.querySelectorAll('.widget-slider .widget-readout')].map(e => e.textContent.trim()),
        img_size: img ? [img.naturalWidth, img.naturalHeight] : null,
        bad_text: ['Error displaying widget', 'Model not found', 'Loading widget...', 'Traceback']
                    .filter(s => txt.includes(s)),
        error_outputs: document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').length,
        python_line: outs.find(o => o.includes('kernel python:')) || null,
        prompts: [...document.querySelectorAll('.jp-Cell.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim()),
      };
    });
    res.dom = d;
    check('kernel name is the project kernel', d.kernel_names.some(k => k === cfg.kernel_display), d.kernel_names);
    check('kernel idle', d.kernel_status === 'idle', d.kernel_status);
    check('kernel runs the venv python', !!d.python_line && d.python_line.includes(cfg.python), d.python_line);
    check('all code cells executed', d.prompts.length >= 4 && d.prompts.every(p => /^\[\d+\]:$/.test(p)), d.prompts);
    check('.jupyter-widgets rendered', d.n_widgets > 0, d.n_widgets);
    check('threshold slider and control slider rendered', d.n_sliders >= 2, d.slider_readouts);
    check('explorer figure rendered', !!d.img_size && d.img_size[0] > 100, d.img_size);
    check('slider moved and precision/recall redrawn', moved && after !== before, { before: before.trim(), after: after.trim() });
    check('no widget error / loading / traceback text', d.bad_text.length === 0, d.bad_text);
    check('no request left 127.0.0.1', res.blocked.length === 0, res.blocked.slice(0, 10));
  } catch (e) {
    res.error = String(e && e.stack || e);
    log('ERROR', res.error);
    try { const p = ctx.pages()[0]; if (p) await p.screenshot({ path: cfg.out, fullPage: true }); } catch (_) {}
  } finally {
    fs.writeFileSync(cfg.results, JSON.stringify(res, null, 1));
    await ctx.close();
  }
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def wait_for_lab(url: str, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f"JupyterLab exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return
        except OSError: pass
        time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer {url.split('?')[0]} within {timeout:.0f}s")


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    "Stop the JupyterLab process group (server and kernels it started): SIGINT twice, then SIGTERM, then SIGKILL."
    if proc.poll() is not None: return
    try:
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            os.killpg(proc.pid, sig)
            try: proc.wait(timeout / 3); break
            except subprocess.TimeoutExpired: pass
        else:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)
    except ProcessLookupError: pass


def shrink_png(path: Path) -> None:
    "Re-save a screenshot as a 256-colour palette PNG (the noisy synthetic photos make the RGB one large)."
    try: from PIL import Image
    except ImportError: return
    with Image.open(path) as im: rgb = im.convert("RGB")
    rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, "PNG", optimize=True)


def screenshot_parser(description: str, out: str, height: int, arrow_presses: int, arrow_help: str,
                      timeout: float) -> argparse.ArgumentParser:
    "The options every JupyterLab screenshot tool takes, with its own defaults."
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=out, help="PNG to write")
    ap.add_argument("--node-modules", default=os.environ.get("JLSHOT_NODE_MODULES", "/tmp/jlshot"),
                    help="folder holding node_modules/playwright-core (or node_modules itself)")
    ap.add_argument("--chromium", default=os.environ.get("JLSHOT_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--node", default=shutil.which("node") or "node")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=height)
    ap.add_argument("--arrow-presses", type=int, default=arrow_presses, help=arrow_help)
    ap.add_argument("--timeout", type=float, default=timeout, help="seconds for each wait")
    ap.add_argument("--max-kb", type=int, default=300, help="above this size the PNG is re-saved with a 256-colour palette")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (notebook, logs) for inspection")
    return ap


def main(argv=None) -> int:
    a = screenshot_parser(__doc__.split("\n")[0], "docs/jupyterlab_widgets.png", 900, 15,
                          "ArrowRight presses on the threshold slider (0.01 each)", 180).parse_args(argv)
    return shoot_notebook(a, NOTEBOOK_CELLS, "trailnb_widgets.ipynb", NODE_SCRIPT)


def shoot_notebook(a,  # parsed options: out, node_modules, chromium, node, width, height, arrow_presses, timeout, max_kb, keep
                   cells: list,  # the notebook's cells (see `_code`)
                   nb_name: str,  # its file name
                   node_script: str,  # the playwright-core script that drives Chromium and writes results.json
                   extra_env: dict | None = None,  # more environment for JupyterLab and its kernel
                   prefix: str = "jlshot-",  # temporary folder prefix
                   ) -> int:
    "Write the notebook, start JupyterLab offline, run `node_script` in headless Chromium, check and report; 0 = PASS."
    nm = Path(a.node_modules).expanduser().resolve()
    pw = next((p for p in (nm / "node_modules" / "playwright-core", nm / "playwright-core") if p.is_dir()), None)
    if pw is None:
        print(f"playwright-core not found under {nm}: mkdir -p {nm} && cd {nm} && npm install playwright-core", file=sys.stderr)
        return 2
    if not Path(a.chromium).exists():
        print(f"Chromium not found at {a.chromium}: apt-get install -y chromium (or --chromium PATH)", file=sys.stderr)
        return 2
    out = Path(a.out).expanduser().resolve(); out.parent.mkdir(parents=True, exist_ok=True)
    jupyter = Path(sys.executable).with_name("jupyter")

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    nbdir, home = tmp / "notebooks", tmp / "trailnb_home"
    for d in (nbdir, home, tmp / "jupyter_config", tmp / "jupyter_data", tmp / "lab_settings", tmp / "lab_workspaces"):
        d.mkdir(parents=True)
    nb = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"display_name": KERNEL_DISPLAY, "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}}}
    (nbdir / nb_name).write_text(json.dumps(nb, indent=1))
    # no "get notified about Jupyter news?" toast and no update check (both would want the internet)
    notif = tmp / "lab_settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))

    env = dict(os.environ, TRAILNB_HOME=str(home), FIFTYONE_DO_NOT_TRACK="true",
               JUPYTER_CONFIG_DIR=str(tmp / "jupyter_config"),  # no user config, no user kernels
               JUPYTER_DATA_DIR=str(tmp / "jupyter_data"),      # kernels/extensions come from the venv (sys.prefix)
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab_settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab_workspaces"),
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", **(extra_env or {}))
    env.pop("MPLBACKEND", None)  # the kernel uses matplotlib-inline
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port, token = free_port(), secrets.token_hex(16)
    cmd = [str(jupyter), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1", "--allow-root",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={nbdir}", "--ServerApp.port_retries=0",
           "--LabApp.extension_manager=readonly", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.news_url=None"]
    base = f"http://127.0.0.1:{port}"
    server_log = tmp / "jupyterlab.log"
    print("JupyterLab:", " ".join(c if token not in c else c.replace(token, "***") for c in cmd))
    print("temp folder:", tmp)
    ok, proc = False, None
    try:
        with open(server_log, "w") as logf:
            proc = subprocess.Popen(cmd, cwd=nbdir, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
            wait_for_lab(f"{base}/api/status?token={token}", proc, a.timeout)
            with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}", timeout=5) as r:
                specs = json.load(r)
            print("kernelspecs:", specs["default"], {k: v["spec"]["display_name"] for k, v in specs["kernelspecs"].items()})
            results = tmp / "results.json"
            cfg = dict(playwright=str(pw), chromium=a.chromium, user_data_dir=str(tmp / "chromium_profile"), base=base,
                       token=token, notebook=nb_name, out=str(out), results=str(results), width=a.width, height=a.height,
                       timeout_ms=int(a.timeout * 1000), arrow_presses=a.arrow_presses, kernel_display=KERNEL_DISPLAY,
                       python=sys.executable)
            js = tmp / "shot.cjs"; js.write_text(node_script)
            r = subprocess.run([a.node, str(js), json.dumps(cfg)], cwd=tmp, env=env, timeout=a.timeout * 6)
            res = json.loads(results.read_text()) if results.exists() else {"error": f"node exited {r.returncode}, no results"}
        checks = res.get("checks", {})
        ok = bool(checks) and all(c["ok"] for c in checks.values()) and not res.get("error") and r.returncode == 0
        if res.get("console_errors"): print("browser console errors:", *res["console_errors"][:10], sep="\n  ")
        if res.get("error"): print("browser script error:", res["error"], file=sys.stderr)
        if out.exists() and out.stat().st_size > a.max_kb * 1024: shrink_png(out)
        if out.exists(): print(f"screenshot: {out} ({out.stat().st_size // 1024} KB)")
        print("RESULT:", "PASS" if ok else "FAIL", f"({sum(c['ok'] for c in checks.values())}/{len(checks)} checks)")
    except Exception as e:
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        if proc is not None: stop(proc)
        if not ok and server_log.exists():
            print("--- JupyterLab log (tail) ---", *server_log.read_text().splitlines()[-40:], sep="\n", file=sys.stderr)
        if a.keep or not ok: print("kept temp folder:", tmp)
        else: shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1



if __name__ == "__main__":
    sys.exit(main())
