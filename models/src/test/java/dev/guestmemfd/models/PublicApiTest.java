package dev.guestmemfd.models;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowable;

import dev.guestmemfd.Flag;
import dev.guestmemfd.GuestMemory;
import dev.guestmemfd.kvm.Kvm;
import dev.guestmemfd.kvm.Vm;
import dev.guestmemfd.linux.LinuxException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.module.ModuleDescriptor;
import java.lang.module.ModuleFinder;
import java.lang.module.ModuleReader;
import java.lang.module.ModuleReference;
import java.lang.reflect.Constructor;
import java.lang.reflect.Executable;
import java.lang.reflect.Field;
import java.lang.reflect.GenericArrayType;
import java.lang.reflect.Member;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.lang.reflect.TypeVariable;
import java.lang.reflect.WildcardType;
import java.net.URISyntaxException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;

/**
 * No type that a user cannot name escapes through the public API of the library's modules
 * (core, kvm, models): not in a signature (return, parameter, field, thrown, super type,
 * type argument or bound), not as the cause or a suppressed exception of a refusal. The
 * bindings' package {@code dev.guestmemfd.linux} and {@code dev.guestmemfd.internal} are
 * exported to the library only; a non-public type of ours is as unnameable.
 */
class PublicApiTest {
    /** One public class of each library module: where its module's classes are found. */
    static final List<Class<?>> MODULES = List.of(GuestMemory.class, Kvm.class, ArchitectureModel.class);

    /** The packages that the library's modules export to everyone. */
    static final Set<String> EXPORTED = new TreeSet<>();
    /** Every class of those packages. */
    static final List<Class<?>> TYPES = new ArrayList<>();

    static {
        for (Class<?> anchor : MODULES) {
            ModuleReference module = moduleOf(anchor);
            Set<String> exported = new HashSet<>();
            for (ModuleDescriptor.Exports e : module.descriptor().exports()) {
                if (!e.isQualified()) {
                    exported.add(e.source());
                }
            }
            EXPORTED.addAll(exported);
            try (ModuleReader reader = module.open()) {
                reader.list().filter(name -> name.endsWith(".class") && !name.endsWith("module-info.class")
                                && !name.endsWith("package-info.class"))
                        .map(name -> name.substring(0, name.length() - ".class".length()).replace('/', '.'))
                        .filter(name -> exported.contains(name.substring(0, name.lastIndexOf('.'))))
                        .sorted()
                        .forEach(name -> TYPES.add(load(name)));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    static ModuleReference moduleOf(Class<?> anchor) {
        try {
            Path where = Path.of(anchor.getProtectionDomain().getCodeSource().getLocation().toURI());
            return ModuleFinder.of(where).findAll().iterator().next();
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    static Class<?> load(String name) {
        try {
            return Class.forName(name, false, PublicApiTest.class.getClassLoader());
        } catch (ClassNotFoundException e) {
            throw new IllegalStateException(e);
        }
    }

    /** {@return true when code outside the library can name {@code type}: public (or protected, nested) all the way out} */
    static boolean nameable(Class<?> type) {
        int m = type.getModifiers();
        boolean visible = Modifier.isPublic(m) || (type.getEnclosingClass() != null && Modifier.isProtected(m));
        return visible && !type.isAnonymousClass() && !type.isLocalClass()
                && (type.getEnclosingClass() == null || nameable(type.getEnclosingClass()));
    }

    /** {@return true when {@code type} is ours but cannot be named outside the library} */
    static boolean hidden(Class<?> type) {
        while (type.isArray()) {
            type = type.getComponentType();
        }
        return !type.isPrimitive() && type.getPackageName().startsWith("dev.guestmemfd")
                && !(EXPORTED.contains(type.getPackageName()) && nameable(type));
    }

    /** Adds to {@code found} every hidden class that {@code type} names, with {@code where}. */
    static void scan(Type type, String where, List<String> found, Set<Type> seen) {
        if (type == null || !seen.add(type)) {
            return;
        }
        switch (type) {
            case Class<?> c -> {
                if (hidden(c)) {
                    found.add(where + ": " + c.getTypeName());
                }
            }
            case ParameterizedType p -> {
                scan(p.getRawType(), where, found, seen);
                scan(p.getOwnerType(), where, found, seen);
                for (Type argument : p.getActualTypeArguments()) {
                    scan(argument, where, found, seen);
                }
            }
            case WildcardType w -> {
                for (Type bound : w.getUpperBounds()) {
                    scan(bound, where, found, seen);
                }
                for (Type bound : w.getLowerBounds()) {
                    scan(bound, where, found, seen);
                }
            }
            case TypeVariable<?> v -> {
                for (Type bound : v.getBounds()) {
                    scan(bound, where, found, seen);
                }
            }
            case GenericArrayType a -> scan(a.getGenericComponentType(), where, found, seen);
            default -> throw new IllegalStateException("unknown kind of type: " + type);
        }
    }

    static boolean api(Member member) {
        int m = member.getModifiers();
        return (Modifier.isPublic(m) || Modifier.isProtected(m)) && !member.isSynthetic();
    }

    /** {@return the hidden types that the public API of {@code type} shows, each with where} */
    static List<String> leaks(Class<?> type) {
        List<String> found = new ArrayList<>();
        String name = type.getTypeName();
        scan(type.getGenericSuperclass(), name + " extends", found, new HashSet<>());
        for (Type i : type.getGenericInterfaces()) {
            scan(i, name + " implements", found, new HashSet<>());
        }
        for (TypeVariable<?> v : type.getTypeParameters()) {
            scan(v, name + "<" + v + ">", found, new HashSet<>());
        }
        for (Field f : type.getDeclaredFields()) {
            if (api(f)) {
                scan(f.getGenericType(), name + "." + f.getName(), found, new HashSet<>());
            }
        }
        List<Executable> executables = new ArrayList<>(List.of(type.getDeclaredMethods()));
        executables.addAll(List.<Constructor<?>>of(type.getDeclaredConstructors()));
        for (Executable e : executables) {
            if (!api(e) || (e instanceof Method m && m.isBridge())) {
                continue;
            }
            String where = name + "." + (e instanceof Constructor ? "<init>" : e.getName());
            if (e instanceof Method m) {
                scan(m.getGenericReturnType(), where + " returns", found, new HashSet<>());
            }
            for (Type p : e.getGenericParameterTypes()) {
                scan(p, where + " takes", found, new HashSet<>());
            }
            for (Type t : e.getGenericExceptionTypes()) {
                scan(t, where + " throws", found, new HashSet<>());
            }
            for (TypeVariable<?> v : e.getTypeParameters()) {
                scan(v, where + " <" + v + ">", found, new HashSet<>());
            }
        }
        return found;
    }

    @Test
    void theExportedPackagesAreTheLibrarysThree() {
        assertThat(EXPORTED).containsExactly("dev.guestmemfd", "dev.guestmemfd.kvm", "dev.guestmemfd.migration", "dev.guestmemfd.models");
        assertThat(TYPES).as("the classes found in them").contains(GuestMemory.class, Kvm.class, SevSnpModel.class)
                .hasSizeGreaterThan(40);
    }

    @Test
    void noSignatureOfThePublicApiNamesAHiddenType() {
        List<String> found = new ArrayList<>();
        for (Class<?> type : TYPES) {
            if (nameable(type)) {
                found.addAll(leaks(type));
            }
        }
        assertThat(found).as("types a user cannot name, shown by the public API").isEmpty();
    }

    /** What the check must catch: one of each way a hidden type can escape. */
    public static class Leaky<T extends LinuxException> extends ArrayList<LinuxException> {
        private static final long serialVersionUID = 1L;
        public transient List<? super LinuxException> field;

        public Leaky(LinuxException cause) {
        }

        public LinuxException[] returns() {
            return null;
        }

        public void throwsIt() throws LinuxException {
        }

        protected Set<Hidden> takes(T value) {
            return null;
        }

        private LinuxException privateIsNotApi() {
            return null;
        }

        static final class Hidden {
        }
    }

    @Test
    void theCheckFindsEachWayOfEscaping() {
        // Leaky's own package is exported: what it shows of the bindings and of Hidden is caught.
        assertThat(leaks(Leaky.class)).extracting(s -> s.replace(PublicApiTest.class.getName() + "$", ""))
                .containsExactlyInAnyOrder("Leaky extends: dev.guestmemfd.linux.LinuxException",
                        "Leaky<T>: dev.guestmemfd.linux.LinuxException",
                        "Leaky.field: dev.guestmemfd.linux.LinuxException",
                        "Leaky.returns returns: dev.guestmemfd.linux.LinuxException[]",
                        "Leaky.takes returns: Leaky$Hidden",
                        "Leaky.takes takes: dev.guestmemfd.linux.LinuxException",
                        "Leaky.throwsIt throws: dev.guestmemfd.linux.LinuxException",
                        "Leaky.<init> takes: dev.guestmemfd.linux.LinuxException");
    }

    /** {@return the hidden classes among {@code failure}, its causes and its suppressed exceptions} */
    static List<String> hiddenIn(Throwable failure) {
        List<String> found = new ArrayList<>();
        List<Throwable> todo = new ArrayList<>(List.of(failure));
        Set<Throwable> seen = new HashSet<>();
        while (!todo.isEmpty()) {
            Throwable t = todo.removeLast();
            if (t == null || !seen.add(t)) {
                continue;
            }
            if (hidden(t.getClass())) {
                found.add(t.getClass().getName() + ": " + t.getMessage());
            }
            todo.add(t.getCause());
            todo.addAll(List.of(t.getSuppressed()));
        }
        return found;
    }

    @Test
    void aRefusalTheKernelGaveCarriesNoHiddenCause() {
        // No VM has this descriptor: the kernel answers EBADF, and the library turns its
        // binding's exception into its own.
        Throwable core = catchThrowable(() -> GuestMemory.createOnVm(1 << 20, Flag.MMAP.bit(), 1 << 20).close());
        assertThat(core).isInstanceOf(dev.guestmemfd.GuestMemoryException.class);
        assertThat(hiddenIn(core)).isEmpty();

        Throwable kvm;
        if (Kvm.available()) {
            kvm = catchThrowable(() -> {
                try (Kvm k = Kvm.open(); Vm vm = k.createVm()) {
                    vm.createVcpu(Integer.MAX_VALUE); // the kernel refuses the id
                }
            });
        } else {
            kvm = catchThrowable(Kvm::open); // no device: the same path, one call earlier
        }
        assertThat(kvm).isInstanceOf(dev.guestmemfd.kvm.KvmException.class);
        assertThat(hiddenIn(kvm)).isEmpty();
        assertThat(hiddenIn(new RuntimeException(new LinuxException(9, "close(-1)")))).as("the check itself").hasSize(1);
    }
}
