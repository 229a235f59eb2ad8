package dev.guestmemfd.testing;

import dev.guestmemfd.Backing;
import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * The annotated test class or method needs the named backings. Where this host lacks one, the
 * test is reported as skipped with {@link Backing#unavailableReason()}.
 *
 * <p>Without a value, on a parameterized test, each invocation needs the backings among its
 * arguments: the invocations whose backing this host lacks are skipped with the reason, the
 * others run.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target({ElementType.TYPE, ElementType.METHOD})
@ExtendWith(HostConditions.class)
public @interface RequiresBacking {
    /** {@return the backings the test needs; empty: those among each invocation's arguments} */
    Backing[] value() default {};
}
