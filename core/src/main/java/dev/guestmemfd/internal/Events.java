package dev.guestmemfd.internal;

import jdk.jfr.Category;
import jdk.jfr.DataAmount;
import jdk.jfr.Description;
import jdk.jfr.Event;
import jdk.jfr.Label;
import jdk.jfr.Name;

/**
 * The JDK Flight Recorder events of the library, one per operation, each with the file
 * range and its duration, so that JDK Mission Control shows where guest memory time goes.
 * An event is recorded for every call, refused ones included (an argument refused up front
 * too), with its real outcome.
 */
public final class Events {
    private Events() {
    }

    /** The fields every event of a file range has. */
    @Category({"guestmemfd"})
    public abstract static class RangeEvent extends Event {
        @Label("Offset")
        @Description("File offset of the range")
        @DataAmount
        public long offset;

        @Label("Length")
        @Description("Bytes in the range")
        @DataAmount
        public long length;

        @Label("Result")
        @Description("ok, the errno name of the refusal, or the class of the exception that ended the call")
        public String result = "ok";
    }

    @Name("dev.guestmemfd.Allocate")
    @Label("Allocate")
    @Description("Pages allocated with fallocate")
    public static final class Allocate extends RangeEvent {
    }

    @Name("dev.guestmemfd.Punch")
    @Label("Punch Hole")
    @Description("Pages freed (or zeroed in place) by punching a hole")
    public static final class Punch extends RangeEvent {
    }

    @Name("dev.guestmemfd.Convert")
    @Label("Convert")
    @Description("Pages converted between shared and private")
    public static final class Convert extends RangeEvent {
        @Label("Target")
        public String target;

        @Label("Content")
        public String content;
    }

    @Name("dev.guestmemfd.Reference")
    @Label("Reference")
    @Description("A host mapping, lease or pin granted, an owner bound, or pages populated")
    public static final class Reference extends RangeEvent {
        @Label("Kind")
        @Description("map, lease, pin, bind or populate")
        public String kind;
    }

    @Name("dev.guestmemfd.Revoke")
    @Label("Revoke Leases")
    @Description("Host leases revoked before a conversion to private")
    public static final class Revoke extends RangeEvent {
        @Label("Leases")
        public int leases;
    }

    @Name("dev.guestmemfd.OwnerRefusal")
    @Label("Owner Refusal")
    @Description("An owner refused a conversion, which was rolled back")
    public static final class OwnerRefusal extends RangeEvent {
        @Label("Reason")
        public String reason;
    }

    @Name("dev.guestmemfd.MemoryFailure")
    @Label("Memory Failure")
    @Description("A page reported poisoned: its owners invalidated, host access to it revoked")
    public static final class MemoryFailure extends RangeEvent {
        @Label("Newly Poisoned")
        @Description("false when the page was already poisoned")
        public boolean newly;
    }
}
