// Opens a one-pass snapshot (written by lazy-stream-snapshot.jsh) three times in one JVM, from a `cat` pipe,
// and restores it lazily: the first run pays the fresh JVM's one-time costs, the later ones do not.
// jshell --enable-native-access=ALL-UNNAMED --class-path core/target/classes:native/target/classes \
//   -R--enable-native-access=ALL-UNNAMED -R-Din=/tmp/onepass-1g.gsnap benchmarks/lazy-stream-warm.jsh
import dev.guestmemfd.*;
import java.nio.file.*;
import java.util.*;
import java.time.Duration;
Path f = Path.of(System.getProperty("in"));
var key = new javax.crypto.spec.SecretKeySpec(Files.readAllBytes(Path.of(f + ".key")), "AES");
for (int i = 0; i < 3; i++) {
  var p = new ProcessBuilder("cat", f.toString()).start();
  long t0 = System.nanoTime();
  PageSource s = PageSource.open(new java.io.BufferedInputStream(p.getInputStream(), 1 << 16), key, new Snapshot.ReplayGuard(), Duration.ofSeconds(30));
  long t1 = System.nanoTime();
  try (GuestMemory m = GuestMemory.create(s.fileSize(), Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD)) {
    Binding o = m.bind(new Owner() { }, 0, s.fileSize());
    try (LazyRestore r = LazyRestore.start(List.of(o), s, x -> { })) {
      long t2 = System.nanoTime();
      r.fetch(0, 4096);
      long t3 = System.nanoTime();
      r.await(Duration.ofMinutes(5));
      long t4 = System.nanoTime();
      System.out.printf("run %d: open %.1f ms, ready %.1f ms, first access %.1f ms, complete %.1f ms%n", i, (t1-t0)/1e6, (t2-t0)/1e6, (t3-t0)/1e6, (t4-t0)/1e6);
    }
  }
  p.waitFor();
}
/exit
