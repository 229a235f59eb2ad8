// Writes a one-pass (version 4, with a layout) snapshot of a memfd file for `gmem restore --lazy -`:
// -R-Dsize=BYTES -R-Dpct=ALLOCATED -R-Dout=FILE (the key goes to FILE.key). Private in runs of 64 pages.
// jshell --enable-native-access=ALL-UNNAMED --class-path core/target/classes:native/target/classes \
//   -R--enable-native-access=ALL-UNNAMED -R-Dsize=1073741824 -R-Dpct=50 -R-Dout=/tmp/onepass-1g.gsnap \
//   benchmarks/lazy-stream-snapshot.jsh
import dev.guestmemfd.*;
import java.nio.file.*;
import java.util.*;
long size = Long.parseLong(System.getProperty("size", "268435456"));
int pct = Integer.parseInt(System.getProperty("pct", "50"));
Path out = Path.of(System.getProperty("out", "/tmp/onepass.gsnap"));
byte[] kb = new byte[32]; new java.security.SecureRandom().nextBytes(kb);
Files.write(Path.of(out + ".key"), kb);
var key = new javax.crypto.spec.SecretKeySpec(kb, "AES");
try (GuestMemory m = GuestMemory.create(size, Flag.MMAP.bit() | Flag.INIT_SHARED.bit(), Backing.MEMFD);
     var os = new java.io.BufferedOutputStream(Files.newOutputStream(out), 1 << 20)) {
    Binding owner = m.bind(new Owner() { }, 0, size);
    long pages = size / 4096, fill = pages * pct / 100;
    for (long p = 0; p < fill; p++) { owner.pages().asSlice(p * 4096, 4096).fill((byte) (p | 1)); }
    for (long p = 0; p < fill; p += 128) { m.convert(p * 4096, Math.min(64, fill - p) * 4096, Attribute.PRIVATE, Content.PRESERVE); }
    Snapshot.write(owner, key, os);
}
System.out.println("wrote " + Files.size(out));
/exit
