// Drives the Serve page in headless Chromium: pick an image, wait for the top-k bars.
// usage: node page_test.js URL IMAGE SCREENSHOT
const { chromium } = require('playwright-core');
(async () => {
  const [url, image, screenshot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('model').textContent.startsWith('model:'));
    await page.setInputFiles('#file', image);
    await page.waitForSelector('.prediction', { timeout: 30000 });
    const rows = await page.$$eval('.prediction', els => els.map(e => e.textContent));
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify({ rows, model: await page.textContent('#model') }));
  } finally {
    await browser.close();
  }
})().catch(err => { console.error(err); process.exit(1); });
