// Drives headless Chromium (Debian's, through playwright-core) through a
// consent: opens the URL, signs in at each login page with the next name
// from `logins`, then continues (or cancels) at the consent page, and stops at
// the first page that is neither. Prints what the person ends up seeing as
// JSON: {status, url, title, message, next, screenshot?}.
//
//   node consent-browser.mjs '{"url": "...", "logins": ["alice"], "action": "consent"}'
//
// `action` is "consent" (default) or "cancel". `screenshot` saves a PNG of
// the final page. Every run starts with a fresh, empty browser profile.
import { chromium } from 'playwright-core';

const opts = JSON.parse(process.argv[2]);
const logins = [...(opts.logins || [])];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let result;
try {
  const context = await browser.newContext();
  // The demo provider's pages import web fonts; nothing outside 127.0.0.1 is reachable.
  await context.route((url) => !['127.0.0.1', 'localhost'].includes(url.hostname), (route) => route.abort());
  const page = await context.newPage();
  let status = 0;
  page.on('response', (res) => {
    if (res.request().isNavigationRequest() && res.frame() === page.mainFrame()) status = res.status();
  });
  await page.goto(opts.url, { waitUntil: 'domcontentloaded' });
  const login = 'input[name="login"]';
  const consent = 'input[name="prompt"][value="consent"]';
  for (let step = 0; step < 10; step += 1) {
    // Wait for a page that asks something, or one of the gateway's pages.
    await page.waitForSelector(`${login}, ${consent}, #title`, { state: 'attached', timeout: 15000 }).catch(() => {});
    if (await page.locator(login).count()) {
      const name = logins.shift();
      if (!name) throw new Error(`a login page appeared but no login is left: ${page.url()}`);
      await page.fill(login, name);
      await page.fill('input[name="password"]', 'any-password');
      await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), page.click('button[type="submit"]')]);
    } else if (await page.locator(consent).count()) {
      if (opts.action === 'cancel') {
        await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), page.click('text=[ Cancel ]')]);
      } else {
        await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), page.click('button[type="submit"]')]);
      }
    } else {
      break;
    }
  }
  const text = async (sel) => ((await page.locator(sel).count()) ? (await page.locator(sel).first().innerText()).trim() : null);
  result = {
    status,
    url: page.url(),
    title: await text('#title'),
    message: await text('#message'),
    next: await text('#next'),
    body: (await page.locator('body').innerText()).slice(0, 2000),
  };
  if (opts.screenshot) {
    await page.screenshot({ path: opts.screenshot, fullPage: true });
    result.screenshot = opts.screenshot;
  }
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
