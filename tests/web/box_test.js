// Drives the Serve page's box in headless Chromium: drop a photo (a real drop event carrying the file), read the
// whole photo's answer and hint, drag a rectangle over the preview, read the request's form and the new answer.
// usage: node box_test.js URL IMAGE SCREENSHOT FROM_X FROM_Y TO_X TO_Y   (the drag, in pixels of the shown preview)
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');
(async () => {
  const [url, image, screenshot, ...drag] = process.argv.slice(2);
  const [fromX, fromY, toX, toY] = drag.map(Number);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 900 } });
    // The form of every request the page sends (Chromium does not expose a body holding a File to the driver)
    // and the answer it got: fetch is wrapped before the page's script runs, recording each FormData entry
    // ("file" parts by filename) and the JSON answered.
    await page.addInitScript(() => {
      window.sentForms = [];
      const original = window.fetch;
      window.fetch = async (resource, options) => {
        if (!(options && options.body instanceof FormData)) return original(resource, options);
        const form = { url: String(resource), entries: [...options.body.entries()].map(
          ([name, value]) => [name, value instanceof File ? `file:${value.name}` : value]) };
        window.sentForms.push(form);
        const response = await original(resource, options);
        form.answer = await response.clone().json();
        return response;
      };
    });
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('model').textContent.startsWith('model:'));
    const bytes = fs.readFileSync(image).toString('base64');
    await page.evaluate(([data, name]) => {
      const raw = Uint8Array.from(atob(data), c => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([raw], name, { type: 'image/jpeg' }));
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }, [bytes, path.basename(image)]);
    await page.waitForSelector('.prediction', { timeout: 30000 });
    await page.waitForFunction(() => document.getElementById('preview').complete && document.getElementById('preview').naturalWidth > 0);
    const rows = () => page.$$eval('.prediction', els => els.map(e => e.textContent));
    const wholeRows = await rows();
    const wholeHint = await page.textContent('#hint');
    const shown = await page.$eval('#preview', img => ({ width: img.clientWidth, height: img.clientHeight,
                                                         naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight }));
    const where = await page.$eval('#preview', img => { const r = img.getBoundingClientRect(); return { x: r.left, y: r.top }; });
    await page.mouse.move(where.x + fromX, where.y + fromY);
    await page.mouse.down();
    await page.mouse.move(where.x + (fromX + toX) / 2, where.y + (fromY + toY) / 2, { steps: 4 });
    await page.mouse.move(where.x + toX, where.y + toY, { steps: 4 });
    await page.mouse.up();
    await page.waitForFunction(() => document.getElementById('hint').textContent.startsWith('Classified the box'),
                               null, { timeout: 30000 });
    const boxRows = await rows();
    const boxHint = await page.textContent('#hint');
    await page.screenshot({ path: screenshot, fullPage: true });
    const sent = await page.evaluate(() => window.sentForms);
    console.log(JSON.stringify({ sent, wholeRows, wholeHint, boxRows, boxHint, shown,
                                 model: await page.textContent('#model') }));
  } finally {
    await browser.close();
  }
})().catch(err => { console.error(err); process.exit(1); });
