// Reads what a person sees of one workflow in the Temporal Web UI, in headless Chromium.
//
//   node webui.mjs '{"base": "http://127.0.0.1:8233", "namespace": "mentorflow",
//                    "workflowId": "relationship/p/r", "runId": "…", "listQuery": "MentoringPhase = …",
//                    "expect": {"history": "…", "currentDetails": "…", "searchAttributes": "…"},
//                    "screenshots": "/tmp/dir", "chromium": "/usr/bin/chromium"}'
//
// Prints one JSON object with the visible text of each page (the summary, details and
// current details are rendered in iframes of their own, so they are read from those) and
// the screenshots' paths. Each page is read only once the text in "expect" shows on it:
// the UI fills its pages in after load, and a shot taken earlier shows a blank page.
import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2]);
const WAIT_MS = 20000;
const workflowUrl = `${config.base}/namespaces/${encodeURIComponent(config.namespace)}/workflows/`
  + `${encodeURIComponent(config.workflowId)}/${encodeURIComponent(config.runId)}`;

const browser = await chromium.launch({
  executablePath: config.chromium,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const result = { screenshots: [] };
const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
const visibleText = () => page.evaluate(() => document.querySelector('main')?.innerText ?? document.body.innerText);
const shoot = async (name) => {
  const path = `${config.screenshots}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  result.screenshots.push(path);
};
try {

  // The history: every event, with the summaries of timers and activities.
  await page.goto(`${workflowUrl}/history`);
  await page.getByText(config.expect.history).first().waitFor({ timeout: WAIT_MS });
  result.history = await visibleText();
  await shoot('history');

  // User Metadata: the start summary and details, and the current details (from a query
  // the worker answers), each rendered as markdown in its own iframe.
  await page.goto(`${workflowUrl}/user-metadata`);
  const frame = (id) => page.frameLocator(`#${id}`).locator('body');
  await frame('user-metadata-current-details').getByText(config.expect.currentDetails).first().waitFor({ timeout: WAIT_MS });
  result.summary = await frame('user-metadata-summary').innerText();
  result.details = await frame('user-metadata-details').innerText();
  result.currentDetails = await frame('user-metadata-current-details').innerText();
  await shoot('user-metadata');

  await page.goto(`${workflowUrl}/search-attributes`);
  await page.getByText(config.expect.searchAttributes).first().waitFor({ timeout: WAIT_MS });
  result.searchAttributes = await visibleText();
  await shoot('search-attributes');

  // The workflow list, filtered the way an operator filters it.
  await page.goto(`${config.base}/namespaces/${encodeURIComponent(config.namespace)}/workflows?query=${encodeURIComponent(config.listQuery)}`);
  await page.getByText(config.workflowId, { exact: true }).first().waitFor({ timeout: WAIT_MS });
  result.list = await visibleText();
  await shoot('list');
} catch (error) {
  result.error = String(error);
  result.url = page.url();
  process.exitCode = 1;
  await shoot('failed').catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
