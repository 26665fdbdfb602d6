package org.orbitrl.tools;

import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.Report;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;

/** {@code orbit report JOB_DATA_DIR}: plots and an HTML page from a job's metrics. */
@Command(name = "report", mixinStandardHelpOptions = true,
        description = "Writes <dir>/report/index.html and PNG plots from <dir>/metrics.jsonl.")
final class ReportCommand implements Callable<Integer> {

    @Parameters(index = "0", description = "the job's data folder (data/<job name>), or a job name under data/")
    Path dir;

    @Override
    public Integer call() throws Exception {
        Path d = Files.isDirectory(dir) ? dir : Path.of("data").resolve(dir);
        Path metrics = d.resolve(MetricsLog.FILE_NAME);
        if (!Files.isRegularFile(metrics)) {
            throw new IllegalArgumentException(metrics + " does not exist: is " + d + " a job's data folder?");
        }
        Report.write(metrics, d.resolve("report"));
        System.out.println(d.resolve("report").resolve(Report.INDEX));
        return 0;
    }
}
