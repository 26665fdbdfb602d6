package org.orbitrl.daemon.jmx;

import javax.management.AttributeChangeNotification;
import javax.management.MBeanNotificationInfo;
import javax.management.Notification;

/** The notification types Orbit's beans emit. */
public final class Notifications {
    /** A job changed state: an {@link AttributeChangeNotification} of attribute {@code State}; user data is the job's name. */
    public static final String STATE = AttributeChangeNotification.ATTRIBUTE_CHANGE;
    /** A job failed; the message is the reason, user data the job's name. */
    public static final String FAILED = "orbit.job.failed";
    /** A job file is invalid; the message lists every problem with file, line and key. */
    public static final String INVALID_FILE = "orbit.job.invalid-file";
    /** A change to a fixed field was refused. */
    public static final String REFUSED_CHANGE = "orbit.job.refused-change";
    /** A corrupt checkpoint was set aside and an older one used. */
    public static final String CHECKPOINT_WARNING = "orbit.job.checkpoint-warning";

    private Notifications() {
    }

    /** The notice type of a {@code JobListener.notice} kind. */
    static String ofKind(String kind) {
        return "orbit.job." + kind;
    }

    static MBeanNotificationInfo[] info() {
        return new MBeanNotificationInfo[] {
            new MBeanNotificationInfo(new String[] {STATE}, AttributeChangeNotification.class.getName(),
                    "A job changed state (attribute State, old and new value)."),
            new MBeanNotificationInfo(new String[] {FAILED, INVALID_FILE, REFUSED_CHANGE, CHECKPOINT_WARNING},
                    Notification.class.getName(),
                    "A job failed, a job file is invalid, a change to a fixed field was refused, or a corrupt"
                            + " checkpoint was set aside; the message says which and why."),
        };
    }
}
