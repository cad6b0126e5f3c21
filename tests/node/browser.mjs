// Shared helpers of the browser drivers: headless Chromium (Debian's, through
// playwright-core) and the steps a person takes at the demo provider's pages.
import { chromium } from 'playwright-core';

/** Launches headless Chromium. */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** A fresh browser profile (one person) that reaches nothing outside this machine. */
export async function person(browser) {
  const context = await browser.newContext();
  // The demo provider's pages import web fonts; nothing outside 127.0.0.1 is reachable.
  await context.route((url) => !['127.0.0.1', 'localhost'].includes(url.hostname), (route) => route.abort());
  return context;
}

/** Records the HTTP status of the page's main-frame navigations; returns a getter. */
export function trackStatus(page) {
  let status = 0;
  page.on('response', (res) => {
    if (res.request().isNavigationRequest() && res.frame() === page.mainFrame()) status = res.status();
  });
  return () => status;
}

/**
 * Signs in at each login page with the next name of `logins`, then continues
 * (`action` "consent") or cancels ("cancel") at the consent page, until a
 * page that is neither, or until `done()` says to stop.
 */
export async function drive(page, logins, action = 'consent', done = () => false) {
  const queue = [...logins];
  const login = 'input[name="login"]';
  const consent = 'input[name="prompt"][value="consent"]';
  for (let step = 0; step < 10 && !done(); step += 1) {
    // Wait for a page that asks something, or one of the gateway's pages.
    for (let i = 0; i < 150 && !done(); i += 1) {
      if (await page.locator(`${login}, ${consent}, #title`).count().catch(() => 0)) break;
      await page.waitForTimeout(100);
    }
    if (done()) break;
    if (await page.locator(login).count()) {
      const name = queue.shift();
      if (!name) throw new Error(`a login page appeared but no login is left: ${page.url()}`);
      await page.fill(login, name);
      await page.fill('input[name="password"]', 'any-password');
      await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }).catch(() => {}), page.click('button[type="submit"]')]);
    } else if (await page.locator(consent).count()) {
      const button = action === 'cancel' ? 'text=[ Cancel ]' : 'button[type="submit"]';
      await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }).catch(() => {}), page.click(button)]);
    } else {
      break;
    }
  }
}

/** What the person sees on the page: status, URL, and the gateway page's parts. */
export async function seen(page, status) {
  const text = async (sel) => ((await page.locator(sel).count()) ? (await page.locator(sel).first().innerText()).trim() : null);
  return {
    status,
    url: page.url(),
    title: await text('#title'),
    message: await text('#message'),
    next: await text('#next'),
    back: (await page.locator('#back').count()) ? await page.locator('#back').first().getAttribute('href') : null,
    body: (await page.locator('body').innerText()).slice(0, 2000),
  };
}
