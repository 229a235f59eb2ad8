package dev.guestmemfd.migration;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.TimeUnit;

/**
 * An example set of identities for trying migration out, made with the JDK's own
 * {@code keytool}: {@code source}, {@code destination} and {@code stranger} (one nobody
 * trusts, for showing a refusal). For each NAME: {@code NAME.p12} (PKCS12, an EC P-256 key and
 * its self-signed certificate), {@code NAME.password} (both 0600) and {@code NAME.crt} (the
 * certificate alone, PEM, for the other end's {@code --peer}).
 */
public final class ExampleIdentities {
    /** The names of the example identities. */
    public static final List<String> NAMES = List.of("source", "destination", "stranger");

    private ExampleIdentities() {
    }

    /**
     * Makes the example set in {@code dir}, creating it readable by its owner alone.
     *
     * @throws IOException when {@code dir} already holds a file of the set, or keytool fails; the
     *                     directory is made readable by its owner alone either way
     */
    public static void create(Path dir) throws IOException {
        Objects.requireNonNull(dir, "dir");
        if (!Files.isDirectory(dir)) {
            Files.createDirectories(dir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        }
        Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwx------"));
        for (String name : NAMES) {
            for (String suffix : List.of(".p12", ".password", ".crt")) {
                if (Files.exists(dir.resolve(name + suffix))) {
                    throw new IOException(dir.resolve(name + suffix) + " exists already: choose an empty directory");
                }
            }
        }
        SecureRandom random = new SecureRandom();
        for (String name : NAMES) {
            byte[] secret = new byte[24];
            random.nextBytes(secret);
            Path password = dir.resolve(name + ".password");
            Files.createFile(password, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
            Files.writeString(password, Base64.getUrlEncoder().withoutPadding().encodeToString(secret) + "\n", StandardCharsets.UTF_8);
            Path keystore = dir.resolve(name + ".p12");
            // keytool creates the keystore under the umask; the 0700 directory keeps it from others until the chmod.
            keytool("-genkeypair", "-alias", name, "-keyalg", "EC", "-groupname", "secp256r1", "-sigalg", "SHA256withECDSA",
                    "-dname", "CN=" + name + ", OU=guestmemfd migration example", "-validity", "825",
                    "-storetype", "PKCS12", "-keystore", keystore.toString(), "-storepass:file", password.toString());
            Files.setPosixFilePermissions(keystore, PosixFilePermissions.fromString("rw-------"));
            // The certificate is written here rather than by a second keytool run: one JVM fewer per identity.
            byte[] certificate;
            try {
                certificate = Identity.load(keystore, password).certificate().getEncoded();
            } catch (java.security.cert.CertificateEncodingException e) {
                throw new IOException("keytool made a certificate that cannot be encoded", e);
            }
            Files.writeString(dir.resolve(name + ".crt"), "-----BEGIN CERTIFICATE-----\n"
                    + Base64.getMimeEncoder(64, new byte[] {'\n'}).encodeToString(certificate)
                    + "\n-----END CERTIFICATE-----\n", StandardCharsets.US_ASCII);
        }
    }

    private static void keytool(String... args) throws IOException {
        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "keytool").toString());
        command.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true);
        Process p = pb.start();
        byte[] output = p.getInputStream().readAllBytes();
        try {
            if (!p.waitFor(60, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new IOException("keytool did not finish in 60 s");
            }
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while keytool ran", e);
        }
        if (p.exitValue() != 0) {
            throw new IOException("keytool " + args[0] + " failed (exit " + p.exitValue() + "): "
                    + new String(output, StandardCharsets.UTF_8).strip());
        }
    }
}
