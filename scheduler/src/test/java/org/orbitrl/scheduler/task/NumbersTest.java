package org.orbitrl.scheduler.task;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Optional;
import org.junit.jupiter.api.Test;

/** Answer normalisation and extraction for free-form (dataset) answers. */
class NumbersTest {

    @Test
    void spellingsOfOneValueAreEqual() {
        String[][] same = {
            {"1,234", "1234"}, {"1,234,567.5", "1234567.5"}, {"$5", "5"}, {"\\$18", "18"}, {"$ 1,000", "1000"},
            {"5.0", "5"}, {"5.00", "5"}, {"+7", "7"}, {" 42 ", "42"}, {"1 000", "1000"}, {"42.", "42"},
            {"3/4", "0.75"}, {"3 / 4", ".75"}, {"\\frac{3}{4}", "0.75"}, {"\\dfrac{1}{2}", "0.5"}, {"-\\frac{1}{2}", "-0.5"},
            {"-0.5", "-1/2"}, {"\u22123", "-3"}, {"6/8", "3/4"}, {"0.1", "1/10"}, {"1.5/3", "0.5"}, {"-0", "0"},
            {"Yes", "yes."}, {"New  York", "new york"},
        };
        for (String[] s : same) {
            assertEquals(true, Numbers.equivalent(s[0], s[1]), "\"" + s[0] + "\" vs \"" + s[1] + "\"");
            assertEquals(true, Numbers.equivalent(s[1], s[0]), "\"" + s[1] + "\" vs \"" + s[0] + "\"");
        }
    }

    @Test
    void differentValuesAreNot() {
        String[][] differ = {
            {"42", "43"}, {"0.33", "1/3"}, {"0.333333333333333333", "1/3"}, {"5", "five"}, {"1,23", "123"},
            {"12,34", "1234"}, {"-5", "5"}, {"1/0", "0"}, {"3/4", "4/3"}, {"yes", "no"}, {"2", "2%"},
        };
        for (String[] s : differ) {
            assertEquals(false, Numbers.equivalent(s[0], s[1]), "\"" + s[0] + "\" vs \"" + s[1] + "\"");
        }
    }

    @Test
    void parsedValues() {
        assertEquals(Optional.of(Rational.of(3, 4)), Numbers.parse("0.75"));
        assertEquals(Optional.of(Rational.of(1234567)), Numbers.parse("$1,234,567.00."));
        assertEquals(Optional.of(Rational.of(-7, 2)), Numbers.parse("-3.5"));
        for (String notNumber : new String[] {"", "$", "-", ".", "1,23", "1..2", "1/0", "abc", "1 2/", "--1", "1-2"}) {
            assertEquals(Optional.empty(), Numbers.parse(notNumber), "\"" + notNumber + "\"");
        }
    }

    @Test
    void responseAnswers() {
        extracted("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", true);
        extracted("#### $1,000.\nthanks", "$1,000.", true);
        extracted("so the total is\n#### 18 dollars", "18", true);
        extracted("#### eighteen", "eighteen", true);
        extracted("#### 5\nand later #### 6", "6", true);
        extracted("We get \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}", true);
        extracted("\\boxed{1} then \\boxed{ 2 }", "2", true);
        extracted("\\boxed{x^{2}}", "x^{2}", true);
        extracted("It costs $5, or 1,200 cents in all.", "1,200", false);
        extracted("Answer: 3/4", "3/4", false);
        extracted("-7 is the answer", "-7", false);
        extracted("\\boxed{3", "3", false); // unbalanced: falls back to the last number
        assertEquals(Optional.empty(), Answers.fromResponse("no number here"));
        assertEquals(Optional.empty(), Answers.fromResponse(""));
    }

    @Test
    void referenceAnswers() {
        String gsm = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72";
        assertEquals(Optional.of("72"), Answers.reference(gsm, ReferenceFormat.GSM8K));
        assertEquals(Optional.of("72"), Answers.reference(gsm, ReferenceFormat.AUTO));
        assertEquals(Optional.empty(), Answers.reference(gsm, ReferenceFormat.BOXED));
        assertEquals(Optional.of(gsm), Answers.reference(gsm, ReferenceFormat.PLAIN));
        assertEquals(Optional.of("\\frac{1}{2}"), Answers.reference("so \\boxed{\\frac{1}{2}}", ReferenceFormat.AUTO));
        assertEquals(Optional.empty(), Answers.reference("42", ReferenceFormat.GSM8K));
        assertEquals(Optional.of("42"), Answers.reference(" 42 ", ReferenceFormat.AUTO));
        assertEquals(Optional.empty(), Answers.reference("   ", ReferenceFormat.PLAIN));
        assertEquals(Optional.empty(), Answers.reference("####  ", ReferenceFormat.AUTO));
    }

    private static void extracted(String response, String text, boolean explicit) {
        assertEquals(Optional.of(new Answers.Extracted(text, explicit)), Answers.fromResponse(response),
                "\"" + response.replace("\n", "\\n") + "\"");
    }
}
