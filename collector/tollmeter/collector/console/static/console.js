// tollmeter console: draws the charts whose data the page carries as JSON blocks.
// Loaded from this origin only; the page holds no inline script (see the CSP).
"use strict";

(function () {
  var COLORS = ["#4e79a7", "#76b7b2", "#59a14f", "#f28e2b", "#e15759"];

  function readData(id) {
    var block = document.getElementById(id);
    return block ? JSON.parse(block.textContent) : null;
  }

  function formatCount(value) {
    return value == null ? "" : Math.round(value).toLocaleString("en-US");
  }

  // uPlot fills each series down to zero: drawing the running sums from the top one
  // down stacks the token types, while the legend shows each type's own count.
  function stacked(data) {
    var sums = [];
    var running = data.t.map(function () { return 0; });
    data.series.forEach(function (series) {
      running = running.map(function (sum, index) { return sum + series.values[index]; });
      sums.push(running);
    });
    var order = data.series.map(function (_, index) { return index; }).reverse();
    return {
      values: [data.t].concat(order.map(function (index) { return sums[index]; })),
      series: order.map(function (index) {
        var color = COLORS[index % COLORS.length];
        return {
          label: data.series[index].label,
          stroke: color,
          fill: color,
          value: function (u, value, seriesIndex, dataIndex) {
            return dataIndex == null ? "" : formatCount(data.series[index].values[dataIndex]);
          }
        };
      })
    };
  }

  function plain(data) {
    return {
      values: [data.t].concat(data.series.map(function (series) { return series.values; })),
      series: data.series.map(function (series, index) {
        var color = COLORS[index % COLORS.length];
        return { label: series.label, stroke: color, width: 2 };
      })
    };
  }

  function draw(figure) {
    var data = readData(figure.getAttribute("data-chart"));
    if (!data || typeof uPlot === "undefined") {
      return;
    }
    var shape = figure.getAttribute("data-stacked") === "false" ? plain(data) : stacked(data);
    var options = {
      width: Math.max(320, figure.clientWidth - 16),
      height: 260,
      series: [{}].concat(shape.series),
      axes: [{}, { values: function (u, ticks) { return ticks.map(formatCount); }, size: 70 }],
      scales: { y: { range: function (u, low, high) { return [0, Math.max(1, high)]; } } }
    };
    new uPlot(options, shape.values, figure);
    figure.setAttribute("data-rendered", String(data.t.length));
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("figure[data-chart]"), draw);
  });
})();
