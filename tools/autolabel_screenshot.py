"""Screenshot `trailnb.autolabel.autolabel_widget` working in real JupyterLab, offline, with headless Chromium.

    .venv/bin/python tools/autolabel_screenshot.py --out docs/autolabel_widget.png

Reuses tools/jupyterlab_screenshot.py (free port, waiting for and stopping JupyterLab, PNG shrinking; its
docstring says how to install Node's `playwright-core` and Chromium) and drives a notebook of its own, in a
temporary folder (nothing in the repository changes but `--out`):
1. the notebook builds tiny random-weight OWLv2 and SAM2 models offline (`make_tiny_owlv2`, `make_tiny_sam2`:
   no weights can be downloaded here, so the boxes and masks are random) and shows `autolabel_widget` on real
   camtrap31 photos (`TRAILNB_SAMPLE_DATA`; synthetic noise images when absent);
2. the browser runs all cells, moves the threshold slider with the keyboard (the labels must change), adds a
   class in the prompts box (the status must name it), presses "Label all images" (the summary must say every
   image was labelled) and takes the screenshot.

Checks (exit 1 if any fails): the kernel is this interpreter, the widget and its figure render, the status
follows the slider and the prompts, the batch run finishes, no widget error or traceback text, and the browser
made no request off 127.0.0.1.
"""
from __future__ import annotations
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jupyterlab_screenshot import _code, screenshot_parser, shoot_notebook  # noqa: E402

NOTEBOOK_CELLS = [
    {"cell_type": "markdown", "metadata": {}, "source": "# Auto-labelling: try prompts on one image, then label them all\n\n"
     "Tiny random-weight OWLv2 and SAM2 (built offline): the boxes and masks are random; the widget is what is shown."},
    _code("""
import sys, tempfile, trailnb
from pathlib import Path
from PIL import Image
from trailnb.core import sample_data_dir
from trailnb.autolabel import autolabel_widget, make_tiny_owlv2, make_tiny_sam2
tmp = Path(tempfile.mkdtemp())
owl, sam = make_tiny_owlv2(tmp / "owlv2", image_size=128), make_tiny_sam2(tmp / "sam2")
d = sample_data_dir("camtrap31")
if d is not None:
    photos = [d / "images" / n for n in ("snapshot_kgalagadi_KGA_S1_B06_B06_R1_KGA_S1_B06_R1_IMAG2032.JPG",
                                         "ena24_7904.jpg", "wcs_camera_traps_animals_0245_1477.jpg")]
else:
    photos = []
    for i, size in enumerate([(640, 480), (480, 640), (800, 450)]):
        photos.append(tmp / f"photo{i}.jpg"); Image.effect_noise(size, 60).convert("RGB").save(photos[-1])
print("kernel python:", sys.executable, "| trailnb", trailnb.__version__, "|", len(photos), "photos")
"""),
    _code("""
autolabel_widget(photos, {"deer": ["deer", "a deer"], "fox": ["fox"]}, owl, out=tmp / "labels.json", threshold=0.6,
                 masks=sam, max_dets=4, workers=0)
"""),
]

NODE_SCRIPT = r"""
const fs = require('fs');
const cfg = JSON.parse(process.argv[2]);
const { chromium } = require(cfg.playwright);
const log = (...a) => console.log('[browser]', ...a);
const res = { checks: {}, blocked: [], console_errors: [] };
const check = (name, ok, detail) => { res.checks[name] = { ok: !!ok, detail: detail === undefined ? null : detail };
                                      log((ok ? 'PASS ' : 'FAIL ') + name + (detail !== undefined ? ': ' + JSON.stringify(detail) : '')); };
const T = cfg.timeout_ms;
const idle = page => page.waitForFunction(() => {
  const ind = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
  return ind && ind.getAttribute('data-status') === 'idle' &&
         ![...document.querySelectorAll('.jp-InputArea-prompt')].some(p => p.textContent.includes('*'));
}, null, { timeout: T });
const statusText = page => page.evaluate(() => {
  const s = [...document.querySelectorAll('.widget-html-content')].find(e => e.textContent.includes('labels'));
  return s ? s.textContent.trim() : '';
});
const changed = (page, before) => page.waitForFunction(b => {
  const s = [...document.querySelectorAll('.widget-html-content')].find(e => e.textContent.includes('labels'));
  return s && s.textContent.trim() !== b;
}, before, { timeout: T }).then(() => true).catch(() => false);

(async () => {
  const ctx = await chromium.launchPersistentContext(cfg.user_data_dir, {
    executablePath: cfg.chromium, headless: true, viewport: { width: cfg.width, height: cfg.height },
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
  });
  try {
    await ctx.route('**/*', route => {
      const u = new URL(route.request().url());
      if (['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol) && u.hostname !== '127.0.0.1') {
        res.blocked.push(route.request().url()); return route.abort(); }
      return route.continue();
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.on('console', m => { if (m.type() === 'error') res.console_errors.push(m.text().slice(0, 300)); });
    await page.goto(`${cfg.base}/lab/tree/${cfg.notebook}?token=${cfg.token}`, { waitUntil: 'domcontentloaded', timeout: T });
    await page.waitForSelector('.jp-NotebookPanel .jp-Notebook', { timeout: T });
    const pickKernel = await page.waitForSelector('.jp-Dialog .jp-mod-accept', { timeout: 5000 }).catch(() => null);
    if (pickKernel) { log('kernel dialog: Select'); await pickKernel.click(); }
    await idle(page);
    if (await page.$('#jp-left-stack:not(.lm-mod-hidden)'))
      await page.click('.jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current').catch(() => {});
    log('Run -> Run All Cells');
    await page.click('.lm-MenuBar-item:has-text("Run")');
    await page.click('.lm-Menu-item:has(.lm-Menu-itemLabel:text-is("Run All Cells"))');
    await page.waitForSelector('.widget-vbox .jp-OutputArea-output img', { timeout: T });
    await idle(page);

    const s0 = await statusText(page); log('status:', s0);
    const handle = page.locator('.widget-vbox .widget-slider .noUi-handle').first();
    await handle.focus();
    for (let i = 0; i < cfg.arrow_presses; i++) await page.keyboard.press('ArrowLeft');
    await handle.blur().catch(() => {});
    const moved = await changed(page, s0); await idle(page);
    const s1 = await statusText(page); log('status after the slider:', s1);
    check('threshold slider re-selects the labels', moved && s1.includes('threshold 0.' ) && s1 !== s0, { before: s0, after: s1 });

    const box = page.locator('.widget-vbox .widget-textarea textarea').first();
    await box.click(); await page.keyboard.press('Control+End'); await page.keyboard.type('\nboar: wild boar');
    await box.blur();  // the text widget sends its value on blur / enter
    const named = await page.waitForFunction(() => [...document.querySelectorAll('.widget-html-content')]
      .some(e => e.textContent.includes('boar')), null, { timeout: T }).then(() => true).catch(() => false);
    await idle(page);
    const s2 = await statusText(page); log('status after the prompts:', s2);
    check('edited prompts relabel the image', named, s2);

    await page.click('.widget-vbox button:has-text("Label all images")');
    const done = await page.waitForFunction(() => [...document.querySelectorAll('.jp-OutputArea-output')]
      .some(o => o.innerText.includes('images labelled')), null, { timeout: T }).then(() => true).catch(() => false);
    await idle(page);
    const summary = await page.evaluate(() => ([...document.querySelectorAll('.jp-OutputArea-output')]
      .map(o => o.innerText).find(t => t.includes('images labelled')) || '').trim());
    log('summary:', summary);
    check('the button labels every image', done && /(^|\n)3 images labelled/.test(summary), summary.split('\n').slice(-3));

    await page.locator('.widget-vbox').first().evaluate(e => e.scrollIntoView({ block: 'start' }));
    await page.evaluate(() => Promise.all([...document.querySelectorAll('img')].map(i => i.decode().catch(() => {}))));
    await page.waitForTimeout(500);
    await page.screenshot({ path: cfg.out, fullPage: false });
    const d = await page.evaluate(() => {
      const txt = document.body.innerText, img = document.querySelector('.widget-vbox .jp-OutputArea-output img');
      return { kernel_names: [...document.querySelectorAll('.jp-Toolbar-kernelName')].map(e => e.textContent.trim()),
               python_line: [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).find(o => o.includes('kernel python:')) || null,
               img_size: img ? [img.naturalWidth, img.naturalHeight] : null,
               bad_text: ['Error displaying widget', 'Model not found', 'Loading widget...', 'Traceback'].filter(s => txt.includes(s)) };
    });
    res.dom = d;
    check('kernel is the project kernel running this python', d.kernel_names.includes(cfg.kernel_display) &&
          !!d.python_line && d.python_line.includes(cfg.python), [d.kernel_names, d.python_line]);
    check('widget figure rendered', !!d.img_size && d.img_size[0] > 300, d.img_size);
    check('no widget error / loading / traceback text', d.bad_text.length === 0, d.bad_text);
    check('no request left 127.0.0.1', res.blocked.length === 0, res.blocked.slice(0, 10));
  } catch (e) {
    res.error = String(e && e.stack || e); log('ERROR', res.error);
    try { await ctx.pages()[0].screenshot({ path: cfg.out }); } catch (_) {}
  } finally {
    fs.writeFileSync(cfg.results, JSON.stringify(res, null, 1));
    await ctx.close();
  }
})();
"""


def main(argv=None) -> int:
    a = screenshot_parser(__doc__.split("\n")[0], "docs/autolabel_widget.png", 1100, 10,
                          "ArrowLeft presses on the threshold slider (0.01 each)", 240).parse_args(argv)
    return shoot_notebook(a, NOTEBOOK_CELLS, "autolabel.ipynb", NODE_SCRIPT, extra_env={"HF_HUB_OFFLINE": "1"},
                          prefix="alshot-")


if __name__ == "__main__":
    sys.exit(main())
