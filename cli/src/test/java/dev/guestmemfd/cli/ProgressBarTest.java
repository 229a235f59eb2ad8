package dev.guestmemfd.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class ProgressBarTest {
    @Test
    void aSlowStepOnATerminalDrawsABarThatEndsAtOneHundredPercent() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (ProgressBar bar = new ProgressBar("allocating", 4, new PrintStream(bytes, true, StandardCharsets.UTF_8), true, 0)) {
            bar.update(1);
            bar.update(2);
        }
        String out = bytes.toString(StandardCharsets.UTF_8);
        assertThat(out).startsWith("\rallocating [##########").contains(" 25%", " 50%").endsWith("100%\n");
    }

    @Test
    void nothingIsDrawnOffATerminalOrBeforeASecond() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        PrintStream out = new PrintStream(bytes, true, StandardCharsets.UTF_8);
        try (ProgressBar notTerminal = new ProgressBar("x", 4, out, false, 0);
             ProgressBar quick = new ProgressBar("y", 4, out, true, ProgressBar.SHOW_AFTER_NANOS)) {
            notTerminal.update(2);
            quick.update(2);
        }
        assertThat(bytes.toString(StandardCharsets.UTF_8)).isEmpty();
    }
}
