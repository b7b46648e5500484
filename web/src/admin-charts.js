// The operator console's charts, drawn by uPlot (bundled from npm; no hand-drawn canvas).
// Each chart sizes itself to its container and takes its colours from the page's theme.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css'; // bundled into dist/admin.css

function theme() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return { accent: v('--accent'), muted: v('--muted'), border: v('--border'), listening: v('--listening'),
    thinking: v('--thinking'), font: `12px ${getComputedStyle(document.body).fontFamily}` };
}

function axes(t, yLabel, yValues) {
  const axis = { stroke: t.muted, font: t.font, grid: { stroke: t.border, width: 1 },
    ticks: { stroke: t.border, width: 1 } };
  return [{ ...axis }, { ...axis, label: yLabel, labelFont: t.font, size: 56, values: yValues }];
}

/**
 * A chart in `container` (an element with a `.chart-plot` child), redrawn by `update(data)`.
 * `kind`: 'points' (one dot per value) or 'bars'. `xRange(data)` gives the x scale's [min, max]
 * (Unix s). The container's `data-points` says how many values above 0 it draws (for tests).
 */
export class Chart {
  constructor(container, { kind, label, yLabel, xRange, yFormat = (v) => String(v), color = 'accent', yMin = 1 }) {
    const t = theme();
    const stroke = t[color];
    this.container = container;
    this.xRange = xRange ?? (() => [Date.now() / 1000 - 3600, Date.now() / 1000]);
    const series = kind === 'bars'
      ? { label, stroke, fill: `${stroke}b3`, width: 0,
          paths: uPlot.paths.bars({ size: [0.7, 40] }), points: { show: false } }
      : { label, stroke, width: 0, paths: () => null, points: { show: true, size: 7, fill: stroke, stroke } };
    this.plot = new uPlot({
      width: 320,
      height: 200,
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 8 } },
      scales: {
        x: { time: true, range: (u) => this.xRange(u.data) },
        y: { range: (_u, _min, max) => [0, Math.max(yMin, (max ?? 0) * 1.15)] },
      },
      axes: axes(t, yLabel, (_u, values) => values.map(yFormat)),
      series: [{ label: 'time', value: (_u, v) => (v ? new Date(v * 1000).toLocaleString() : '') },
        { ...series, value: (_u, v) => (v === null || v === undefined ? '' : yFormat(v)) }],
    }, [[], []], container.querySelector('.chart-plot'));
    this.resize();
    new ResizeObserver(() => this.resize()).observe(container);
  }

  resize() {
    const plot = this.container.querySelector('.chart-plot');
    const width = Math.floor(plot.clientWidth);
    if (width > 0 && width !== this.plot.width) this.plot.setSize({ width, height: width < 480 ? 180 : 220 });
  }

  update(data) {
    this.plot.setData(data);
    this.container.dataset.points = String(data[1].filter((v) => v > 0).length);
  }
}
