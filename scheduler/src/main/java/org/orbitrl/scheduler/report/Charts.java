package org.orbitrl.scheduler.report;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.io.IOException;
import java.math.BigDecimal;
import java.math.MathContext;
import java.nio.file.Path;
import java.text.FieldPosition;
import java.text.NumberFormat;
import java.text.ParsePosition;
import java.util.List;
import java.util.Optional;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.NumberAxis;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.renderer.xy.XYLineAndShapeRenderer;
import org.jfree.chart.title.TextTitle;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;

/** Line charts over steps, drawn by JFreeChart without a display, saved as PNG. */
final class Charts {

    static {
        if (System.getProperty("java.awt.headless") == null) {
            System.setProperty("java.awt.headless", "true");
        }
    }

    /** Width and height of every chart, in pixels. */
    static final int WIDTH = 900;
    static final int HEIGHT = 480;
    /** Above this many points a series is drawn as a line only, without point markers. */
    private static final int MARKERS_UP_TO = 60;
    private static final Color[] PALETTE = {
        new Color(0x1f77b4), new Color(0xd62728), new Color(0x2ca02c), new Color(0xff7f0e), new Color(0x9467bd),
        new Color(0x8c564b), new Color(0xe377c2), new Color(0x17becf), new Color(0x7f7f7f), new Color(0xbcbd22),
    };

    private Charts() {
    }

    /** One named line: {@code y[i]} at step {@code x[i]}; NaN values are left out. */
    record Series(String name, double[] x, double[] y) {
        Series {
            if (x.length != y.length) {
                throw new IllegalArgumentException("series " + name + ": " + x.length + " x values, " + y.length + " y");
            }
        }

        int finitePoints() {
            int n = 0;
            for (double v : y) {
                n += Double.isFinite(v) ? 1 : 0;
            }
            return n;
        }
    }

    /**
     * A line chart of {@code series} against step, or empty if no series has a finite point.
     *
     * @param yRange      {@code {min, max}} to fix the value axis (fractions: {@code {0, 1}}), or
     *                    null to fit the data
     * @param includeZero when fitting, whether the value axis reaches down (or up) to zero
     */
    static Optional<JFreeChart> lines(String title, String subtitle, String yLabel, List<Series> series,
                                      double[] yRange, boolean includeZero) {
        XYSeriesCollection data = new XYSeriesCollection();
        int most = 0;
        double largest = 0; // largest |y|, to keep a flat line from being magnified into noise
        for (Series s : series) {
            if (s.finitePoints() == 0) {
                continue;
            }
            XYSeries xy = new XYSeries(s.name(), true, true);
            for (int i = 0; i < s.x().length; i++) {
                if (Double.isFinite(s.y()[i])) {
                    xy.addOrUpdate(s.x()[i], s.y()[i]);
                    largest = Math.max(largest, Math.abs(s.y()[i]));
                }
            }
            data.addSeries(xy);
            most = Math.max(most, xy.getItemCount());
        }
        if (data.getSeriesCount() == 0) {
            return Optional.empty();
        }
        JFreeChart chart = ChartFactory.createXYLineChart(title, "step", yLabel, data, PlotOrientation.VERTICAL,
                true, false, false);
        chart.setBackgroundPaint(Color.WHITE);
        chart.getTitle().setFont(new Font(Font.SANS_SERIF, Font.BOLD, 18));
        if (subtitle != null && !subtitle.isEmpty()) {
            chart.addSubtitle(new TextTitle(subtitle, new Font(Font.SANS_SERIF, Font.PLAIN, 12)));
        }
        XYPlot plot = chart.getXYPlot();
        plot.setBackgroundPaint(Color.WHITE);
        plot.setDomainGridlinePaint(new Color(0xdddddd));
        plot.setRangeGridlinePaint(new Color(0xdddddd));
        plot.setOutlinePaint(new Color(0x999999));
        NumberAxis x = (NumberAxis) plot.getDomainAxis();
        x.setStandardTickUnits(NumberAxis.createIntegerTickUnits());
        x.setAutoRangeIncludesZero(false);
        NumberAxis y = (NumberAxis) plot.getRangeAxis();
        y.setAutoRangeIncludesZero(includeZero);
        y.setNumberFormatOverride(new AxisFormat());
        if (largest > 0) {
            y.setAutoRangeMinimumSize(0.2 * largest);
        }
        if (yRange != null) {
            y.setRange(yRange[0], yRange[1]);
        }
        for (NumberAxis a : new NumberAxis[] {x, y}) {
            a.setLabelFont(new Font(Font.SANS_SERIF, Font.PLAIN, 14));
            a.setTickLabelFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        }
        XYLineAndShapeRenderer r = new XYLineAndShapeRenderer(true, most <= MARKERS_UP_TO);
        for (int i = 0; i < data.getSeriesCount(); i++) {
            r.setSeriesPaint(i, PALETTE[i % PALETTE.length]);
            r.setSeriesStroke(i, new BasicStroke(2.0f));
        }
        plot.setRenderer(r);
        return Optional.of(chart);
    }

    /**
     * Tick labels that stay short at any scale: plain decimals with at most 6 significant digits
     * between 0.001 and 10^6 ({@code 0.3}, {@code 25951}), else {@code 4.5e-5}; zero is {@code 0}.
     */
    static final class AxisFormat extends NumberFormat {

        @Override
        public StringBuffer format(double v, StringBuffer to, FieldPosition pos) {
            return to.append(compact(v));
        }

        @Override
        public StringBuffer format(long v, StringBuffer to, FieldPosition pos) {
            return to.append(compact(v));
        }

        @Override
        public Number parse(String source, ParsePosition pos) {
            throw new UnsupportedOperationException("axis labels are not parsed");
        }

        static String compact(double v) {
            double a = Math.abs(v);
            if (v == 0 || !Double.isFinite(v)) {
                return v == 0 ? "0" : Double.toString(v);
            }
            if (a >= 1e-3 && a < 1e6) {
                return new BigDecimal(v).round(new MathContext(6)).stripTrailingZeros().toPlainString();
            }
            BigDecimal d = new BigDecimal(v).round(new MathContext(4)).stripTrailingZeros();
            int exp = d.precision() - d.scale() - 1;
            return d.movePointLeft(exp).stripTrailingZeros().toPlainString() + "e" + exp;
        }
    }

    /** Writes {@code chart} to {@code file} as a {@value #WIDTH}×{@value #HEIGHT} PNG. */
    static void png(JFreeChart chart, Path file) throws IOException {
        ChartUtils.saveChartAsPNG(file.toFile(), chart, WIDTH, HEIGHT);
    }
}
