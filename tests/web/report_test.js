// Opens a run's report.html in headless Chromium: it must load with no network, show the headline
// metrics and have no broken image. usage: node report_test.js REPORT_HTML SCREENSHOT
const { chromium } = require('playwright-core');
(async () => {
  const [report, screenshot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    const requests = [];
    page.on('request', request => { if (!request.url().startsWith('file:') && !request.url().startsWith('data:')) requests.push(request.url()); });
    await page.goto('file://' + report, { waitUntil: 'load' });
    const images = await page.$$eval('img', els => els.map(e => ({ alt: e.alt, width: e.naturalWidth, complete: e.complete })));
    const headline = await page.textContent('table.headline');
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify({ images, headline, requests, title: await page.title() }));
  } finally {
    await browser.close();
  }
})().catch(err => { console.error(err); process.exit(1); });
