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
import { drive, launch, person, seen, trackStatus } from './browser.mjs';

const opts = JSON.parse(process.argv[2]);
const browser = await launch();
let result;
try {
  const context = await person(browser);
  const page = await context.newPage();
  const status = trackStatus(page);
  await page.goto(opts.url, { waitUntil: 'domcontentloaded' });
  await drive(page, opts.logins || [], opts.action);
  result = await seen(page, status());
  if (opts.screenshot) {
    await page.screenshot({ path: opts.screenshot, fullPage: true });
    result.screenshot = opts.screenshot;
  }
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
