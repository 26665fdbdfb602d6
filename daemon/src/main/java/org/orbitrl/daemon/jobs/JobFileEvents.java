package org.orbitrl.daemon.jobs;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Set;
import org.orbitrl.scheduler.job.JobFiles;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.JobSpecDiff;
import org.orbitrl.scheduler.job.yaml.ConfigException;
import org.orbitrl.scheduler.job.yaml.ConfigProblem;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What a job file appearing, changing or disappearing does to its job. Called by the jobs-folder
 * watcher once a file has been quiet for the debounce time; compares content hashes, so touching
 * a file without changing it does nothing. An invalid file never affects another job or the daemon.
 */
public final class JobFileEvents {
    private static final Logger LOG = LoggerFactory.getLogger(JobFileEvents.class);

    private final JobManager manager;

    public JobFileEvents(JobManager manager) {
        this.manager = manager;
    }

    /** Compares the whole folder with what is known: new and changed files are read, missing ones removed. */
    public void rescan(Path jobsDir) {
        Set<String> present = new HashSet<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(jobsDir)) {
            for (Path p : ds) {
                if (JobFiles.isJobFile(p) && Files.isRegularFile(p)) {
                    present.add(JobFiles.nameOf(p));
                    if (!unchangedSinceRead(p)) {
                        changed(p);
                    }
                }
            }
        } catch (IOException e) {
            LOG.error("cannot list the jobs folder {}: {}", jobsDir, e.toString());
            return;
        }
        for (Job job : manager.jobs()) {
            if (job.file != null && job.file.getParent() != null && job.file.getParent().equals(jobsDir)
                    && !present.contains(job.name())) {
                removed(job.file);
            }
        }
    }

    /** Whether a file's size and modification time are those of its last read (a cheap rescan). */
    private boolean unchangedSinceRead(Path p) {
        Job job = manager.job(JobFiles.nameOf(p)).orElse(null);
        if (job == null || !p.equals(job.file) || job.fileSize < 0) {
            return false;
        }
        try {
            BasicFileAttributes a = Files.readAttributes(p, BasicFileAttributes.class);
            return a.size() == job.fileSize && a.lastModifiedTime().toMillis() == job.fileModified
                    && !(job.state == JobState.STOPPED && job.reason.equals(StopKind.FILE_DELETED.reason));
        } catch (IOException e) {
            return false;
        }
    }

    /** A job file was created or changed (or renamed into place). */
    public void changed(Path file) {
        String name = JobFiles.nameOf(file);
        byte[] bytes;
        BasicFileAttributes attrs;
        try {
            attrs = Files.readAttributes(file, BasicFileAttributes.class);
            bytes = Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            removed(file);
            return;
        } catch (IOException e) {
            LOG.error("cannot read job file {}: {}", file, e.toString());
            return;
        }
        String hash = sha256(bytes);
        Job job = manager.job(name).orElse(null);
        try {
            onRead(file, bytes, hash, job);
        } finally {
            Job now = manager.job(name).orElse(null);
            if (now != null && file.equals(now.file)) {
                now.fileSize = attrs.size();
                now.fileModified = attrs.lastModifiedTime().toMillis();
            }
        }
    }

    private void onRead(Path file, byte[] bytes, String hash, Job job) {
        String name = JobFiles.nameOf(file);
        if (job != null && job.file != null && !job.file.equals(file) && Files.exists(job.file)) {
            String msg = file + ": job name '" + name + "' is already taken by " + job.file + "; this file is ignored";
            LOG.error(msg);
            manager.noticeFile(name, "invalid-file", msg);
            return;
        }
        if (job != null && hash.equals(job.fileHash) && file.equals(job.file)) {
            if (job.state == JobState.STOPPED && job.reason.equals(StopKind.FILE_DELETED.reason)) {
                manager.requeue(job, "job file is back");
            }
            return; // same content: a touch, or an editor saving without changes
        }
        JobSpec spec;
        try {
            spec = JobFiles.parse(file.toString(), bytes, name, file.toAbsolutePath().getParent());
        } catch (ConfigException e) {
            invalid(job, name, file, hash, e);
            return;
        } catch (RuntimeException e) {   // NOPMD: a file the checks missed still fails its job with a reason
            LOG.error("job {}: reading {} failed", name, file, e);
            invalid(job, name, file, hash, new ConfigException(List.of(new ConfigProblem(file.toString(), 0, 0, "",
                    "could not be read as a job: " + e))));
            return;
        }
        if (job == null) {
            Job created = manager.register(name);
            created.file = file;
            created.fileHash = hash;
            created.spec = spec;
            LOG.info("job {}: new job file {}", name, file);
            manager.requeue(created, "new job file");
            return;
        }
        updated(job, file, hash, spec);
    }

    /** A job file disappeared: its job stops after a checkpoint. */
    public void removed(Path file) {
        String name = JobFiles.nameOf(file);
        Job job = manager.job(name).orElse(null);
        if (job == null || (job.file != null && !job.file.equals(file))) {
            return;
        }
        if (job.spec == null) {
            LOG.info("job {}: its invalid job file was deleted; forgetting it", name);
            manager.forget(job);
            return;
        }
        if (!job.state.terminal()) {
            LOG.info("job {}: job file deleted; stopping it after a checkpoint", name);
            manager.stop(job, StopKind.FILE_DELETED);
        }
        job.fileHash = "";
    }

    private void updated(Job job, Path file, String hash, JobSpec spec) {
        job.file = file;
        job.fileHash = hash;
        JobSpec current = job.spec;
        if (current == null || !job.hasCheckpoint && (job.state == JobState.QUEUED || job.state.terminal())) {
            // Nothing has been trained with the old values: the new file simply replaces them.
            job.spec = spec;
            if (job.state == JobState.FAILED || job.state == JobState.STOPPED) {
                manager.requeue(job, "job file changed");
            } else {
                manager.fileReplaced(job);
            }
            return;
        }
        List<JobSpecDiff.Change> changes = JobSpecDiff.between(current, spec);
        List<JobSpecDiff.Change> fixed = JobSpecDiff.fixed(changes);
        List<JobSpecDiff.Change> tunable = changes.stream().filter(JobSpecDiff.Change::tunable).toList();
        if (!fixed.isEmpty()) {
            String msg = file + ": changes to fixed fields are refused, the job keeps its running values: " + fixed
                    + (tunable.isEmpty() ? "" : "; live-tunable changes applied: " + tunable)
                    + ". To change a fixed field, start a new job under another file name.";
            LOG.warn("job {}: {}", job.name(), msg);
            manager.notice(job, "refused-change", msg);
        }
        if (!tunable.isEmpty()) {
            job.spec = current.with(spec.tunables());
            LOG.info("job {}: live-tunable changes from {}: {}", job.name(), file, tunable);
            job.tunablesChanged();
        }
        if (job.state == JobState.COMPLETED) {
            LOG.info("job {} has completed; its file changed but it does not run again (rename the file to start a"
                    + " new job)", job.name());
        } else if (job.state == JobState.FAILED
                || job.state == JobState.STOPPED && job.reason.equals(StopKind.FILE_DELETED.reason)) {
            manager.requeue(job, "job file changed");
        }
        manager.persist(job);
    }

    /**
     * A job file that does not read. The job's reason is one line, the first problem and how many more there are
     * ({@code orbitctl jobs} shows it); the log and the notification list every problem.
     */
    private void invalid(Job job, String name, Path file, String hash, ConfigException e) {
        String reason = "invalid job file: " + firstProblem(file, e);
        String all = "invalid job file: " + e.getMessage();
        LOG.error("job {}: {}", name, all);
        if (job == null) {
            Job created = manager.register(name);
            created.file = file;
            created.fileHash = hash;
            created.state = JobState.FAILED;
            created.reason = reason;
            manager.persist(created);
            manager.notice(created, "invalid-file", all);
            return;
        }
        job.fileHash = hash;
        job.file = file;
        if (job.spec == null || job.state == JobState.FAILED && !job.hasCheckpoint) {
            manager.notice(job, "invalid-file", all);
            if (job.state != JobState.FAILED || !job.reason.equals(reason)) {
                manager.transition(job, JobState.FAILED, reason);
            }
            return;
        }
        // A running (or finished) job keeps its values; the bad edit is reported, nothing else.
        manager.notice(job, "invalid-file", "invalid job file, the job keeps its current values: " + e.getMessage());
    }

    /** {@code broken.yaml:3:16: sampling.temperature: expected a number, got 'hot' (and 2 more)}: the file by its name. */
    private static String firstProblem(Path file, ConfigException e) {
        ConfigProblem p = e.problems().getFirst();
        String first = new ConfigProblem(file.getFileName().toString(), p.line(), p.column(), p.key(), p.message())
                .toString();
        int more = e.problems().size() - 1;
        return first + (more == 0 ? "" : " (and " + more + " more)");
    }

    static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JDK", e);
        }
    }
}
