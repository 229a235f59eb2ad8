package dev.guestmemfd.testing;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * The annotated test class or method needs {@code /dev/kvm}. Where this process cannot use it
 * (no device node, no permission, or {@code GMEM_NO_KVM=1}) the test is reported as skipped,
 * with the reason the library gives, instead of failing or vanishing.
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target({ElementType.TYPE, ElementType.METHOD})
@ExtendWith(HostConditions.class)
public @interface RequiresKvm {
}
