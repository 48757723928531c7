"""Canonical forms of identifiers and weak traits (identity/normalize.py)."""

from __future__ import annotations

import pytest

from identity.normalize import (
    InvalidIdentifier,
    NameForm,
    NormalizationRules,
    normalize_address,
    normalize_company,
    normalize_date,
    normalize_identifier,
    normalize_name,
    normalize_text,
)

RULES = NormalizationRules()


def norm(type_: str, raw: str, rules: NormalizationRules = RULES) -> str:
    return normalize_identifier(type_, raw, rules)


def with_check_char(body: str) -> str:
    """Append the ISO 7064 MOD 11-2 check character, computed independently of the module."""
    total = sum(int(digit) * (2 ** (17 - i) % 11) for i, digit in enumerate(body))
    return body + "10X98765432"[total % 11]


# --- phone -------------------------------------------------------------------


def test_phone_without_country_code_takes_default_region() -> None:
    assert norm("phone", "138 1234 5678") == "+8613812345678"


def test_phone_with_country_code_ignores_default_region() -> None:
    assert norm("phone", "+44 20 7946 0958") == "+442079460958"


def test_phone_default_region_is_configurable() -> None:
    assert norm("phone", "(650) 253-0000", NormalizationRules(default_region="US")) == "+16502530000"


def test_phone_with_international_dialling_prefix_is_e164() -> None:
    assert norm("phone", "0086 138-1234-5678") == "+8613812345678"


def test_invalid_phone_without_country_code_names_default_region() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^not a valid number for region CN$"):
        norm("phone", "12345")


def test_invalid_phone_names_default_region_when_configured() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^not a valid number for region US$"):
        norm("phone", "555-0100", NormalizationRules(default_region="US"))


def test_too_short_phone_with_country_code_names_its_region() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^not a valid number for region GB$"):
        norm("phone", "+44 12")


def test_unassigned_phone_with_country_code_names_its_region() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^not a valid number for region US$"):
        norm("phone", "+1 200 000 0000")


def test_phone_with_unknown_country_code_says_so() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^not a valid number: unknown country code$"):
        norm("phone", "+999 1234 5678")


def test_phone_that_is_not_a_number_is_invalid() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^not a valid number for region CN$"):
        norm("phone", "call me")


# --- email -------------------------------------------------------------------


def test_email_is_trimmed_and_lowercased() -> None:
    assert norm("email", "  Jane.Doe@Example.COM \n") == "jane.doe@example.com"


def test_email_full_width_characters_are_folded() -> None:
    assert norm("email", "ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ") == "jane@example.com"


def test_gmail_drops_plus_tag() -> None:
    assert norm("email", "jane+newsletter@gmail.com") == "jane@gmail.com"


def test_gmail_drops_dots_in_local_part() -> None:
    assert norm("email", "j.a.n.e@gmail.com") == "jane@gmail.com"


def test_googlemail_folds_to_gmail() -> None:
    assert norm("email", "J.Ane+x@GoogleMail.com") == "jane@gmail.com"


def test_plus_only_provider_drops_tag_but_keeps_dots() -> None:
    assert norm("email", "jane.doe+shop@outlook.com") == "jane.doe@outlook.com"


def test_other_domains_keep_plus_and_dots() -> None:
    assert norm("email", "jane.doe+shop@example.com") == "jane.doe+shop@example.com"


def test_yahoo_keeps_plus_and_hyphen() -> None:
    assert norm("email", "jane-shop+x@yahoo.com") == "jane-shop+x@yahoo.com"


def test_email_alias_rules_are_configurable() -> None:
    rules = NormalizationRules(email_plus_alias_domains=frozenset(), email_dot_alias_domains=frozenset())
    assert norm("email", "j.ane+x@gmail.com", rules) == "j.ane+x@gmail.com"


@pytest.mark.parametrize(
    "raw",
    ["jane", "jane@", "@example.com", "jane@example", "jane@@example.com", "ja ne@example.com",
     "jane@example.", "jane@.com", "jane@exa..mple.com"],
)  # fmt: skip
def test_email_without_local_at_domain_dot_tld_is_invalid(raw: str) -> None:
    with pytest.raises(InvalidIdentifier, match=r"^not a valid email address$"):
        norm("email", raw)


def test_email_whose_local_part_folds_away_is_invalid() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^not a valid email address$"):
        norm("email", "+tag@gmail.com")


# --- opaque identifiers --------------------------------------------------------


def test_wechat_openid_keeps_case() -> None:
    assert norm("wechat_openid", " oUpF8uMuAJO_M2pxb1Q9zNjWeS6o ") == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


@pytest.mark.parametrize("raw", ["oUpF8", "o" * 129, "oUpF8uMu AJO", "oUpF8uMu.AJO", "微信用户名字"])
def test_wechat_openid_outside_6_to_128_url_safe_characters_is_invalid(raw: str) -> None:
    with pytest.raises(InvalidIdentifier, match="openid"):
        norm("wechat_openid", raw)


def test_device_id_is_trimmed_and_lowercased() -> None:
    assert norm("device_id", " 6F9619FF-8B86-D011-B42D-00C04FC964FF ") == "6f9619ff-8b86-d011-b42d-00c04fc964ff"


def test_crm_id_is_trimmed_and_uppercased() -> None:
    assert norm("crm_id", " cus-00042a ") == "CUS-00042A"


def test_custom_type_keeps_case_and_folds_full_width() -> None:
    assert norm("loyalty:card_no", "  ＡＢ-12cd ") == "AB-12cd"


def test_unknown_type_without_namespace_is_invalid() -> None:
    with pytest.raises(InvalidIdentifier, match="unknown identifier type 'passport'"):
        norm("passport", "E12345678")


@pytest.mark.parametrize(
    "type_", ["phone", "email", "wechat_openid", "device_id", "crm_id", "national_id", "shop:member"]
)
def test_blank_value_is_empty_for_every_type(type_: str) -> None:
    with pytest.raises(InvalidIdentifier, match=r"^empty value$"):
        norm(type_, " \t\u3000")


# --- national_id ---------------------------------------------------------------


def test_national_id_with_valid_check_digit_is_accepted() -> None:
    valid = with_check_char("44030419900307123")
    assert norm("national_id", valid) == valid


def test_national_id_standard_example_with_x_check_char_is_accepted() -> None:
    # the worked example of GB 11643-1999, whose check character is X
    assert with_check_char("11010519491231002") == "11010519491231002X"
    assert norm("national_id", "11010519491231002x") == "11010519491231002X"


def test_national_id_spaces_and_hyphens_are_removed() -> None:
    assert norm("national_id", "110105 19491231-002X") == "11010519491231002X"


def test_national_id_full_width_digits_are_folded() -> None:
    assert norm("national_id", "１１０１０５１９４９１２３１００２Ｘ") == "11010519491231002X"


def test_national_id_with_wrong_check_digit_is_rejected() -> None:
    with pytest.raises(InvalidIdentifier, match=r"^check digit does not match$"):
        norm("national_id", "110105194912310021")


def test_national_id_of_other_shape_is_kept_normalised() -> None:
    assert norm("national_id", " e1234-5678 ") == "E12345678"


# --- names ---------------------------------------------------------------------


def test_chinese_traditional_and_latin_names_share_tokens() -> None:
    forms = [normalize_name(raw) for raw in ("张伟", "張偉", "Zhang Wei", "Wei Zhang")]
    assert [form.tokens for form in forms if form] == [("wei", "zhang")] * 4


def test_traditional_chinese_name_text_is_simplified() -> None:
    assert normalize_name("張偉") == NameForm(
        text="张伟", latin="zhang wei", tokens=("wei", "zhang"), phonetic=("SHNK", "W")
    )


def test_latin_accents_are_folded_and_spaces_collapsed() -> None:
    form = normalize_name("José  Núñez")
    assert form is not None and form.text == "jose nunez"


def test_letters_without_decomposition_are_folded_too() -> None:
    form = normalize_name("Łukasz Søren")
    assert form is not None and form.text == "lukasz soren"


def test_chinese_given_name_is_one_pinyin_word() -> None:
    chinese, latin = normalize_name("张伟明"), normalize_name("Weiming Zhang")
    assert chinese is not None and latin is not None
    assert chinese.latin == "zhang weiming"
    assert chinese.tokens == latin.tokens == ("weiming", "zhang")


def test_compound_surname_is_one_pinyin_word() -> None:
    form = normalize_name("欧阳修")
    assert form is not None and form.latin == "ouyang xiu"


def test_polyphonic_surname_takes_its_surname_reading() -> None:
    form = normalize_name("单田芳")
    assert form is not None and form.latin == "shan tianfang"


def test_u_umlaut_pinyin_is_written_u() -> None:
    chinese, latin = normalize_name("吕布"), normalize_name("Lü Bu")
    assert chinese is not None and latin is not None
    assert chinese.tokens == latin.tokens == ("bu", "lu")


def test_name_punctuation_is_removed_and_apostrophe_joins() -> None:
    form = normalize_name("O'Brien,  Mary-Jane")
    assert form is not None and form.text == "obrien mary jane"


def test_name_with_nothing_left_is_none() -> None:
    assert normalize_name(" .,-! ") is None


def test_chinese_and_romanised_names_get_the_same_phonetic_codes() -> None:
    assert normalize_name("张伟明").phonetic == normalize_name("Zhang Weiming").phonetic == ("SHNK", "WMNK")


def test_latin_name_that_also_spells_pinyin_gets_the_usual_code() -> None:
    assert normalize_name("Anne Lee").phonetic == normalize_name("Ann Lee").phonetic


def test_latin_phonetic_code_tolerates_vowel_typos() -> None:
    right, typo = normalize_name("Katherine Smith"), normalize_name("Kathryn Smyth")
    assert right is not None and typo is not None
    assert right.phonetic == typo.phonetic == ("K0RN", "SM0")


def test_phonetic_codes_do_not_depend_on_token_order() -> None:
    assert normalize_name("Smith Zhang").phonetic == normalize_name("Zhang Smith").phonetic == ("SHNK", "SM0")


# --- text, addresses, companies -------------------------------------------------


def test_text_folds_full_width_and_case() -> None:
    assert normalize_text("ＡＢＣ  Straße") == "abc strasse"


def test_text_drops_spaces_between_chinese_characters() -> None:
    assert normalize_text("上海 浦東 新區") == "上海浦东新区"


def test_text_drops_spaces_between_japanese_kana() -> None:
    assert normalize_text("やまだ たろう") == "やまだたろう"


def test_address_abbreviations_are_expanded() -> None:
    assert normalize_address("Apt 3, 12 St. Kilda Rd.") == "apartment 3 12 street kilda road"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("5 Ocean Ave", "5 ocean avenue"), ("5 Ocean Av.", "5 ocean avenue"), ("9 Elm Dr", "9 elm drive"),
     ("1 Moon Cres", "1 moon crescent"), ("2 Sun Pl", "2 sun place"), ("3 Oak Ct", "3 oak court"),
     ("Pacific Hwy", "pacific highway")],
)  # fmt: skip
def test_each_street_type_abbreviation_is_expanded(raw: str, expected: str) -> None:
    assert normalize_address(raw) == expected


def test_chinese_address_is_simplified_and_unspaced() -> None:
    assert normalize_address("北京市 朝陽區 建國路 88 號") == "北京市朝阳区建国路88号"


def test_address_with_nothing_left_is_none() -> None:
    assert normalize_address(" , ") is None


@pytest.mark.parametrize(
    "raw",
    ["Acme Ltd", "ACME Limited", "Acme Co., Ltd.", "Acme Inc.", "Acme Corporation", "Acme LLC", "Acme GmbH",
     "Acme plc", "Acme S.A.", "Acme Pty. Ltd."],
)  # fmt: skip
def test_company_legal_suffixes_are_removed(raw: str) -> None:
    assert normalize_company(raw) == "acme"


def test_company_ampersand_becomes_and() -> None:
    assert normalize_company("Marks & Spencer plc") == "marks and spencer"


def test_company_and_co_is_removed_whole() -> None:
    assert normalize_company("J.P. Morgan & Co.") == "jp morgan"


def test_chinese_company_legal_form_is_removed() -> None:
    assert normalize_company("華為技術有限公司") == normalize_company("华为技术股份有限公司") == "华为技术"


def test_chinese_company_group_is_kept() -> None:
    assert normalize_company("复星国际集团有限公司") == "复星国际集团"


def test_legal_suffix_inside_the_name_is_kept() -> None:
    assert normalize_company("Limited Brands Inc") == "limited brands"


def test_company_that_is_only_a_legal_form_is_not_emptied() -> None:
    assert normalize_company("Limited") == "limited"


# --- dates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["19151111", "1915-11-11", "1915/11/11", "1915.11.11", " 1915-11-11 ", "1915年11月11日", "１９１５-１１-１１"]
)
def test_year_first_dates_become_iso(raw: str) -> None:
    assert normalize_date(raw) == "1915-11-11"


def test_single_digit_month_and_day_are_padded() -> None:
    assert normalize_date("2001/2/3") == "2001-02-03"


@pytest.mark.parametrize(
    "raw",
    ["11.11.1915", "03/04/2001", "25.12.1990", "1915-11/11", "191511", "1915-11-11T10:00", "yesterday", ""],
)
def test_ambiguous_or_unknown_date_shapes_are_rejected(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^not a date: "):
        normalize_date(raw)


@pytest.mark.parametrize("raw", ["19150230", "2023-02-29", "2001-13-01", "2001-00-10", "0000-01-01"])
def test_impossible_calendar_dates_are_rejected(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^not a date: "):
        normalize_date(raw)


def test_leap_day_is_a_real_date() -> None:
    assert normalize_date("2024-02-29") == "2024-02-29"
