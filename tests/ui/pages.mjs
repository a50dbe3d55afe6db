// Opens the pages people reach from their emails (mentorflow/pages/) in headless Chromium at
// a phone's width, checks each with axe-core, and presses its button, for tests/api/test_pages_server.py.
//
//   node pages.mjs '{"chromium": "/usr/bin/chromium", "axe": "…/axe.min.js", "screenshots": "/tmp/dir",
//                    "width": 375, "pages": [{"name": "match", "url": "http://…/p/…",
//                    "fill": {"textarea[name=text]": "…"}, "check": ["input[value=continue]"],
//                    "press": "Accept the match", "expect": "Done"}]}'
//
// One browser for every page. For each: open it, wait for its heading, screenshot it, run
// axe-core (WCAG 2.1 A and AA, and best practices) and measure whether it fits the width;
// then, when "press" names a button, reach that button with the keyboard (Tab) and press it
// with Enter, wait for "expect", screenshot and check the answer page too. Prints one JSON
// object: per page its violations, widths, visible texts and screenshots. A step with "scan"
// is only opened, as a mail scanner's browser opens every link of an email.
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const WAIT_MS = 20000;
const TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'];

const browser = await chromium.launch({
  executablePath: config.chromium,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
// The pages allow no scripts at all (CSP): only this check's own axe-core is let in.
const context = await browser.newContext({ viewport: { width: config.width, height: 812 }, bypassCSP: true });
const page = await context.newPage();

const check = async (name) => {
  const path = `${config.screenshots}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  await page.addScriptTag({ path: config.axe });
  const axe = await page.evaluate(async (tags) => {
    const result = await window.axe.run(document, { runOnly: { type: 'tag', values: tags } });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.html) }));
  }, TAGS);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  const text = await page.evaluate(() => document.querySelector('main').innerText);
  return { screenshot: path, violations: axe, width, text };
};

const results = [];
try {
  for (const step of config.pages) {
    const result = { name: step.name };
    const response = await page.goto(step.url);
    result.status = response.status();
    await page.locator('h1').waitFor({ timeout: WAIT_MS });
    if (step.scan) {  // a mail scanner's browser: open it, run what it runs, press nothing
      results.push(result);
      continue;
    }
    result.page = await check(step.name);
    if (step.press) {
      for (const [selector, value] of Object.entries(step.fill ?? {})) {
        await page.locator(selector).first().fill(value);
      }
      for (const selector of step.check ?? []) {
        await page.locator(selector).first().check();
      }
      const button = page.getByRole('button', { name: step.press, exact: true });
      // Keyboard only: Tab until the button has the focus, then Enter.
      let focused = false;
      for (let i = 0; i < 40 && !focused; i += 1) {
        await page.keyboard.press('Tab');
        focused = await button.evaluate((element) => element === document.activeElement);
      }
      result.reachedByKeyboard = focused;
      await page.keyboard.press('Enter');
      await page.getByText(step.expect).first().waitFor({ timeout: WAIT_MS });
      result.answer = await check(`${step.name}-done`);
    }
    results.push(result);
  }
} catch (error) {
  results.push({ error: String(error), url: page.url(), text: await page.content() });
} finally {
  await browser.close();
}
console.log(JSON.stringify({ pages: results }));
