package org.orbitrl.tools;

import org.orbitrl.scheduler.report.Comparison;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.Report;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

/**
 * {@code orbit report JOB_DATA_DIR}: plots and an HTML page from a job's metrics; with
 * {@code --compare OTHER_DIR...}, one page overlaying the runs (sync against async RL, say).
 */
@Command(name = "report", mixinStandardHelpOptions = true,
        description = "Writes <dir>/report/index.html and PNG plots from <dir>/metrics.jsonl; with --compare, "
                + "<dir>/compare/index.html overlaying every run's eval accuracy, pass@k, reward and step time.")
final class ReportCommand implements Callable<Integer> {

    @Parameters(index = "0", description = "the job's data folder (data/<job name>), or a job name under data/")
    Path dir;

    @Option(names = "--compare", arity = "1..*", paramLabel = "DIR",
            description = "other runs' data folders (or job names under data/) to overlay with this one")
    List<Path> others = List.of();

    @Override
    public Integer call() throws Exception {
        Path d = dataDir(dir);
        if (others.isEmpty()) {
            Report.write(d.resolve(MetricsLog.FILE_NAME), d.resolve("report"));
            System.out.println(d.resolve("report").resolve(Report.INDEX));
            return 0;
        }
        List<Path> dirs = new ArrayList<>(List.of(d));
        for (Path o : others) {
            dirs.add(dataDir(o));
        }
        // a run is named by its folder, or by its whole path where two folders share a name
        boolean clash = dirs.stream().map(p -> p.toAbsolutePath().normalize().getFileName()).distinct().count() < dirs.size();
        List<Comparison.Run> runs = new ArrayList<>();
        for (Path p : dirs) {
            String name = clash ? p.toString() : p.toAbsolutePath().normalize().getFileName().toString();
            runs.add(new Comparison.Run(name, p.resolve(MetricsLog.FILE_NAME)));
        }
        Report.Written w = Comparison.write(runs, d.resolve("compare"));
        System.out.println(w.index());
        return 0;
    }

    private static Path dataDir(Path dir) {
        Path d = Files.isDirectory(dir) ? dir : Path.of("data").resolve(dir);
        Path metrics = d.resolve(MetricsLog.FILE_NAME);
        if (!Files.isRegularFile(metrics)) {
            throw new IllegalArgumentException(metrics + " does not exist: is " + d + " a job's data folder?");
        }
        return d;
    }
}
