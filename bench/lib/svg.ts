/**
 * A latency-by-percentile chart as a standalone SVG (no dependencies, no browser): one
 * panel per load, one line per row; the percentile axis is log-scaled
 * (`-log10(1 - p)`: 50 %, 90 %, 99 %, 99.9 %, 99.99 %), the latency axis too.
 */

export interface Series {
  label: string;
  color: string;
  /** `[percentile, nanoseconds]`, percentiles in 0–100. */
  curve: [number, number][];
}

export interface Panel {
  title: string;
  series: Series[];
}

const W = 520;
const H = 340;
const M = { left: 64, right: 16, top: 36, bottom: 48 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function xOf(p: number): number {
  // 50 % → 0.301, 99.99 % → 4; the maximum (100 %) is drawn at 4.3.
  const v = p >= 100 ? 4.55 : -Math.log10(1 - p / 100);
  const lo = Math.log10(2);
  const hi = 4.6;
  return M.left + ((v - lo) / (hi - lo)) * (W - M.left - M.right);
}

function fmtNs(ns: number): string {
  if (ns >= 1e9) return `${ns / 1e9} s`;
  if (ns >= 1e6) return `${ns / 1e6} ms`;
  if (ns >= 1e3) return `${ns / 1e3} µs`;
  return `${ns} ns`;
}

function panel(p: Panel, dx: number, yLo: number, yHi: number): string {
  const yOf = (ns: number): number => {
    const v = Math.log10(Math.max(ns, 10 ** yLo));
    return M.top + (1 - (v - yLo) / (yHi - yLo)) * (H - M.top - M.bottom);
  };
  const parts: string[] = [];
  parts.push(`<g transform="translate(${dx},0)">`);
  parts.push(`<text x="${(M.left + W - M.right) / 2}" y="20" text-anchor="middle" font-size="13" font-weight="600">${esc(p.title)}</text>`);
  // grid and axes
  const fine = yHi - yLo <= 3;
  for (let e = yLo; e <= yHi; e++) {
    for (const k of fine ? [1, 2, 5] : [1]) {
      const v = k * 10 ** e;
      if (e === yHi && k > 1) continue;
      const y = yOf(v);
      parts.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${y}" y2="${y}" stroke="${k === 1 ? '#ccc' : '#eee'}"/>`);
      parts.push(`<text x="${M.left - 6}" y="${y + 4}" text-anchor="end" font-size="${k === 1 ? 11 : 9}" fill="${k === 1 ? '#000' : '#666'}">${fmtNs(v)}</text>`);
    }
  }
  for (const [pct, label] of [
    [50, '50%'],
    [90, '90%'],
    [99, '99%'],
    [99.9, '99.9%'],
    [99.99, '99.99%'],
    [100, 'max'],
  ] as [number, string][]) {
    const x = xOf(pct);
    parts.push(`<line x1="${x}" x2="${x}" y1="${M.top}" y2="${H - M.bottom}" stroke="#ddd"/>`);
    parts.push(`<text x="${x}" y="${H - M.bottom + 16}" text-anchor="middle" font-size="11">${label}</text>`);
  }
  parts.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 10}" text-anchor="middle" font-size="11">percentile (log scale)</text>`);
  parts.push(
    `<text x="14" y="${(M.top + H - M.bottom) / 2}" text-anchor="middle" font-size="11" transform="rotate(-90 14 ${(M.top + H - M.bottom) / 2})">latency, scheduled → JavaScript</text>`,
  );
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#888"/>`);
  // lines
  p.series.forEach((s, i) => {
    if (s.curve.length === 0) return;
    const d = s.curve.map(([pct, ns], k) => `${k === 0 ? 'M' : 'L'}${xOf(pct).toFixed(1)},${yOf(ns).toFixed(1)}`).join(' ');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
    const ly = M.top + 14 + i * 15;
    parts.push(`<line x1="${M.left + 8}" x2="${M.left + 26}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"/>`);
    parts.push(`<text x="${M.left + 30}" y="${ly}" font-size="11">${esc(s.label)}</text>`);
  });
  parts.push('</g>');
  return parts.join('\n');
}

/** Renders the panels side by side on one shared latency scale. */
export function renderSvg(panels: Panel[], caption: string): string {
  const values = panels.flatMap((p) => p.series.flatMap((s) => s.curve.map(([, ns]) => ns))).filter((v) => v > 0 && Number.isFinite(v));
  const yLo = values.length === 0 ? 3 : Math.floor(Math.log10(Math.min(...values)));
  const yHi = values.length === 0 ? 9 : Math.max(yLo + 1, Math.ceil(Math.log10(Math.max(...values))));
  const width = W * panels.length;
  const height = H + 24;
  const body = panels.map((p, i) => panel(p, i * W, yLo, yHi)).join('\n');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    body,
    `<text x="8" y="${height - 8}" font-size="10" fill="#555">${esc(caption)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}
