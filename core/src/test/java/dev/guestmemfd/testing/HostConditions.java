package dev.guestmemfd.testing;

import dev.guestmemfd.Backing;
import dev.guestmemfd.linux.KvmDevice;
import java.lang.reflect.AnnotatedElement;
import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.extension.ConditionEvaluationResult;
import org.junit.jupiter.api.extension.ExecutionCondition;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.InvocationInterceptor;
import org.junit.jupiter.api.extension.ReflectiveInvocationContext;
import org.junit.platform.commons.support.AnnotationSupport;
import org.opentest4j.TestAbortedException;

/**
 * Disables the tests that need what this host lacks ({@link RequiresKvm},
 * {@link RequiresBacking}), giving the library's own reason, so that reports and the console
 * show them as skipped and why.
 *
 * <p>In the scope of either annotation, an invocation of a parameterized test whose
 * {@link Backing} argument this host lacks is skipped (aborted) with the reason: no test ever
 * runs on a backing the host does not offer.
 *
 * <p>A disabled class is never instantiated and its {@code @BeforeAll} never runs. The reason
 * is also printed, once per test class or method, because Maven's console summary counts
 * skipped tests without saying why.
 */
public final class HostConditions implements ExecutionCondition, InvocationInterceptor {
    /** The prefix of every line this prints, to find them in a build log. */
    public static final String SKIPPED = "[SKIPPED]";

    @Override
    public ConditionEvaluationResult evaluateExecutionCondition(ExtensionContext context) {
        Optional<AnnotatedElement> element = context.getElement();
        if (element.isEmpty()) {
            return ConditionEvaluationResult.enabled("nothing to check");
        }
        // The annotations of the element itself only: a method inherits its class's verdict,
        // and asking again would print the reason once per method.
        List<String> missing = new ArrayList<>();
        if (AnnotationSupport.isAnnotated(element.get(), RequiresKvm.class)) {
            KvmDevice.unavailableReason().ifPresent(why -> missing.add("needs /dev/kvm: " + why));
        }
        AnnotationSupport.findAnnotation(element.get(), RequiresBacking.class).ifPresent(requires -> {
            for (Backing backing : requires.value()) {
                reason(backing).ifPresent(missing::add);
            }
        });
        if (missing.isEmpty()) {
            return ConditionEvaluationResult.enabled("this host has what the test needs");
        }
        String reason = String.join("; ", missing);
        System.out.println(SKIPPED + " " + context.getDisplayName() + ": " + reason);
        return ConditionEvaluationResult.disabled(reason);
    }

    /** Aborts an invocation of a parameterized test whose backing argument this host lacks. */
    @Override
    public void interceptTestTemplateMethod(Invocation<Void> invocation,
            ReflectiveInvocationContext<Method> invocationContext, ExtensionContext extensionContext) throws Throwable {
        for (Object argument : invocationContext.getArguments()) {
            if (argument instanceof Backing backing) {
                Optional<String> missing = reason(backing);
                if (missing.isPresent()) {
                    invocation.skip();
                    System.out.println(SKIPPED + " " + extensionContext.getRequiredTestMethod().getName() + " "
                            + extensionContext.getDisplayName() + ": " + missing.get());
                    TestAbortedException skipped = new TestAbortedException(missing.get());
                    skipped.setStackTrace(new StackTraceElement[0]); // the reason is the whole story
                    throw skipped;
                }
            }
        }
        invocation.proceed();
    }

    private static Optional<String> reason(Backing backing) {
        return backing.unavailableReason().map(why -> "needs the " + backing + " backing: " + why);
    }
}
