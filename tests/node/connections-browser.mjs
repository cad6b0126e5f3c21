// A person at the gateway's connections page in headless Chromium: opens
// it, signs in with the first of `logins`, reads the rows, then does each
// action in turn (`disconnect` or `connect` a target; a connect goes through
// the upstream's consent, signing in with the action's `logins`), reading the
// rows after each. Prints JSON:
//   {title, rows: [{target, status}], steps: [{title, notice, rows}], cookies: [{name, value}]}
//
//   node connections-browser.mjs '{"url": ".../connections", "logins": ["alice"],
//                                  "actions": [{"do": "disconnect", "target": "demo"}]}'
import { drive, launch, person } from './browser.mjs';

const opts = JSON.parse(process.argv[2]);
const browser = await launch();
const result = { steps: [] };
const rows = (page) => page.$$eval('tr[data-target]', (trs) => trs.map((r) => ({ target: r.dataset.target, status: r.dataset.status })));
const text = async (page, sel) => ((await page.locator(sel).count()) ? (await page.locator(sel).first().innerText()).trim() : null);
try {
  const context = await person(browser);
  const page = await context.newPage();
  await page.goto(opts.url, { waitUntil: 'domcontentloaded' });
  await drive(page, opts.logins || [], 'consent');
  result.title = await text(page, '#title');
  result.rows = await rows(page);
  for (const action of opts.actions || []) {
    await Promise.all([
      page.waitForNavigation({ waitUntil: 'domcontentloaded' }).catch(() => {}),
      page.click(`#${action.do}-${action.target}`, { timeout: 10000 }),
    ]).catch(async (e) => {
      throw new Error(`${e.message}\nat ${page.url()}:\n${(await page.locator('body').innerText().catch(() => '')).slice(0, 1500)}`);
    });
    let reached = null;
    if (action.do === 'connect') {
      await drive(page, action.logins || [], 'consent');
      reached = await text(page, '#title');
      await page.goto(opts.url, { waitUntil: 'domcontentloaded' });
    }
    result.steps.push({ reached, title: await text(page, '#title'), notice: await text(page, '#notice'), rows: await rows(page) });
  }
  result.cookies = (await context.cookies(new URL(opts.url).origin)).map((c) => ({ name: c.name, value: c.value, httpOnly: c.httpOnly, sameSite: c.sameSite }));
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
