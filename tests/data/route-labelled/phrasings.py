"""The hand-written citizen phrasings behind route-labelled/*.jsonl, and how their labels are completed.

Each entry names the services that correctly answer it (any of them counts) and the phrasings. The
place is attached by ``build.py`` from the place lists below: some in the location field, some in the
text, some as a postcode, some missing, some ambiguous. The responsible office of a label is looked up
in the responsibility registry (the data, not the router), in build.py.
"""

# Kreis Segeberg (demo catalogue, owner Land 01). Ids of knowledge/demo/services.json.
SEGEBERG = [
    (["sh-wohnsitz-anmelden"], [
        "Ich bin umgezogen und muss mich ummelden", "Wohnsitz anmelden", "Wir sind neu hergezogen, wo melden wir uns an?",
        "Anmeldung nach Umzug", "Ich brauche eine Wohnungsgeberbestätigung und will mich anmelden",
        "Adressänderung nach Umzug", "neuer Hauptwohnsitz", "Zweitwohnsitz anmelden"]),
    (["sh-wohnsitz-abmelden"], [
        "Ich ziehe ins Ausland und muss mich abmelden", "Nebenwohnung abmelden", "Abmeldung Wohnsitz wegen Auswanderung"]),
    (["sh-meldebescheinigung"], [
        "Ich brauche eine Meldebescheinigung für den Arbeitgeber", "Meldebestätigung beantragen", "Bescheinigung über meinen Wohnsitz"]),
    (["sh-melderegisterauskunft"], [
        "Ich suche die aktuelle Adresse eines ehemaligen Mieters", "Melderegisterauskunft beantragen"]),
    (["sh-auskunftssperre"], ["Auskunftssperre eintragen lassen, ich werde bedroht", "Meine Adresse soll gesperrt werden"]),
    (["sh-personalausweis"], [
        "Personalausweis beantragen", "Mein Ausweis läuft ab, ich brauche einen neuen", "neuer Perso",
        "Personalausweis ist abgelaufen", "Ich möchte einen Personalausweis beantragen, was muss ich mitbringen?",
        "Personalausweiss verlängern"]),
    (["sh-personalausweis-verlust"], [
        "Mein Personalausweis wurde gestohlen", "Ausweis verloren, was nun?", "Perso weg, Verlust melden"]),
    (["sh-personalausweis-vorlaeufig"], ["vorläufiger Personalausweis, ich fliege übermorgen", "Ich brauche schnell einen Ersatzausweis für die Reise"]),
    (["sh-eid-pin"], ["PIN für den Online-Ausweis vergessen", "Online-Ausweisfunktion freischalten"]),
    (["sh-reisepass"], [
        "Reisepass beantragen", "Ich brauche einen Reisepass für die USA", "Reisepass abgelaufen",
        "neuer Reisepass", "Wie lange dauert ein neuer Reisepass?", "Reispass beantragen"]),
    (["sh-reisepass-vorlaeufig"], ["vorläufigen Reisepass beantragen", "Express-Reisepass, Urlaub nächste Woche"]),
    (["sh-reisepass-verlust"], ["Mein Reisepass ist im Urlaub gestohlen worden", "Reisepass verloren"]),
    (["sh-kinderreisepass"], ["Kinderreisepass für meine Tochter", "Ausweis für mein Baby", "Pass für Kinder beantragen"]),
    (["sh-fuehrungszeugnis"], [
        "Ich brauche ein Führungszeugnis für den neuen Job", "erweitertes Führungszeugnis für den Sportverein",
        "polizeiliches Führungszeugnis beantragen", "Fuehrungszeugnis"]),
    (["sh-beglaubigung"], ["Kopie meines Zeugnisses beglaubigen lassen", "Beglaubigung von Dokumenten"]),
    (["sh-unterschriftsbeglaubigung"], ["Unterschrift beglaubigen lassen", "Beglaubigung einer Unterschrift für die Bank"]),
    (["sh-gewerbe-anmelden"], [
        "Gewerbe anmelden", "Ich möchte mich selbstständig machen und ein Gewerbe anmelden", "Gewerbeanmeldung Kleingewerbe",
        "Gewerbeschein beantragen"]),
    (["sh-gewerbe-ummelden"], ["Gewerbe ummelden, wir ziehen mit dem Betrieb um"]),
    (["sh-gewerbe-abmelden"], ["Gewerbe abmelden", "Ich gebe mein Geschäft auf, Gewerbeabmeldung"]),
    (["sh-gaststaettenerlaubnis"], ["Gaststättenerlaubnis für mein Café", "Ich will eine Kneipe eröffnen"]),
    (["sh-gestattung"], ["Ausschank beim Dorffest, brauchen wir eine Genehmigung?"]),
    (["sh-hundesteuer-anmelden"], [
        "Hund anmelden", "Wir haben einen Hund bekommen, wie melde ich ihn zur Hundesteuer an?", "Hundesteuer anmelden",
        "Welpe angeschafft, Hundemarke"]),
    (["sh-hundesteuer-abmelden"], ["Unser Hund ist gestorben, Hundesteuer abmelden", "Hund abmelden"]),
    (["sh-hundesteuer-anmelden", "sh-hundesteuer-abmelden"], ["Ich habe eine Frage zur Hundesteuer"]),
    (["sh-gefaehrlicher-hund"], ["Erlaubnis für einen gefährlichen Hund", "Listenhund halten"]),
    (["sh-fundsache-verlust"], ["Ich habe mein Portemonnaie verloren, ist es abgegeben worden?", "Fundbüro, Schlüssel verloren"]),
    (["sh-fundsache-abgeben"], ["Ich habe ein Fahrrad gefunden, wo gebe ich es ab?", "Fundsache abgeben"]),
    (["sh-geburt-beurkunden"], ["Geburt anzeigen, unser Sohn ist geboren", "Geburtsurkunde nach der Geburt"]),
    (["sh-personenstandsurkunde"], ["Sterbeurkunde beantragen", "Ich brauche eine Heiratsurkunde", "Kopie Geburtsurkunde anfordern"]),
    (["sh-eheschliessung"], ["Wir wollen heiraten, Anmeldung der Eheschließung", "Termin beim Standesamt zum Heiraten"]),
    (["sh-sterbefall"], ["Mein Vater ist verstorben, Sterbefall anzeigen"]),
    (["sh-vaterschaftsanerkennung"], ["Vaterschaft anerkennen vor der Geburt"]),
    (["sh-briefwahl"], ["Briefwahl beantragen", "Wahlschein für die Bundestagswahl"]),
    (["sh-wohngeld"], ["Wohngeld beantragen", "Zuschuss zur Miete, ich habe wenig Rente", "Mietzuschuss Antrag"]),
    (["sh-wohnberechtigungsschein"], ["Wohnberechtigungsschein für eine Sozialwohnung", "WBS beantragen"]),
    (["sh-grundsicherung"], ["Grundsicherung im Alter beantragen, meine Rente reicht nicht"]),
    (["sh-sozialhilfe"], ["Sozialhilfe beantragen"]),
    (["sh-hilfe-zur-pflege"], ["Hilfe zur Pflege, das Pflegeheim ist zu teuer"]),
    (["sh-bildung-teilhabe"], ["Zuschuss für Klassenfahrt und Schulbedarf, Bildung und Teilhabe"]),
    (["sh-unterhaltsvorschuss"], ["Unterhaltsvorschuss, der Vater zahlt nicht", "Unterhaltsvorschuss beantragen"]),
    (["sh-elterngeld"], ["Elterngeld beantragen", "Elterngeldantrag für unser zweites Kind"]),
    (["sh-schwerbehindertenausweis"], ["Schwerbehindertenausweis beantragen", "Grad der Behinderung feststellen lassen"]),
    (["sh-behindertenparkausweis"], ["Parkausweis für Behinderte, blauer Parkausweis"]),
    (["sh-anwohnerparkausweis"], ["Anwohnerparkausweis beantragen", "Bewohnerparkausweis verlängern"]),
    (["sh-kita-platz"], ["Kitaplatz für unseren Sohn", "Wir suchen einen Krippenplatz", "Kita Anmeldung"]),
    (["sh-kindertagespflege-erlaubnis"], ["Ich möchte Tagesmutter werden"]),
    (["sh-sorgeerklaerung"], ["gemeinsames Sorgerecht, wir sind nicht verheiratet"]),
    (["sh-schuelerbefoerderung"], ["Schülerfahrkarte für den Bus zur Schule", "Schulbus Fahrkarte beantragen"]),
    (["sh-bafoeg-schueler"], ["Schüler-BAföG beantragen"]),
    (["sh-kfz-neuzulassung"], ["Neuwagen zulassen", "Auto anmelden", "Ich habe ein neues Auto gekauft und muss es zulassen", "KFZ Zulassung Neufahrzeug"]),
    (["sh-kfz-halterwechsel"], ["Gebrauchtwagen ummelden", "Auto ummelden nach Kauf", "Ich habe ein gebrauchtes Motorrad gekauft, Halterwechsel"]),
    (["sh-kfz-umzug"], ["Auto nach Umzug ummelden, neues Kennzeichen?"]),
    (["sh-kfz-abmelden"], ["Auto abmelden", "Fahrzeug außer Betrieb setzen", "Ich will mein Auto abmelden, es wird verschrottet"]),
    (["sh-wunschkennzeichen"], ["Wunschkennzeichen reservieren", "Kann ich ein Wunschkennzeichen reservieren?"]),
    (["sh-kurzzeitkennzeichen"], ["Kurzzeitkennzeichen für die Überführung"]),
    (["sh-saisonkennzeichen"], ["Saisonkennzeichen für das Motorrad"]),
    (["sh-oldtimerkennzeichen"], ["H-Kennzeichen für meinen Oldtimer"]),
    (["sh-zb1-verlust"], ["Fahrzeugschein verloren"]),
    (["sh-zb2-verlust"], ["Fahrzeugbrief verloren, was tun"]),
    (["sh-kennzeichen-verlust"], ["Nummernschild gestohlen"]),
    (["sh-fuehrerschein-ersterteilung"], ["Führerschein beantragen, ich mache gerade die Fahrschule", "Antrag Fahrerlaubnis Klasse B"]),
    (["sh-begleitetes-fahren"], ["Begleitetes Fahren ab 17"]),
    (["sh-fuehrerschein-umtausch"], ["alten Führerschein umtauschen", "Pflichtumtausch grauer Lappen", "Führerschein Umtausch Frist"]),
    (["sh-fuehrerschein-ausland"], ["Ausländischen Führerschein umschreiben lassen", "Ich habe einen türkischen Führerschein, muss ich ihn umschreiben?"]),
    (["sh-internationaler-fuehrerschein"], ["Internationaler Führerschein für Urlaub in Australien"]),
    (["sh-fuehrerschein-verlust"], ["Führerschein verloren", "Ersatzführerschein"]),
    (["sh-personenbefoerderungsschein"], ["P-Schein für Taxi"]),
    (["sh-baugenehmigung"], ["Baugenehmigung für ein Einfamilienhaus", "Bauantrag stellen", "Ich will einen Carport bauen, brauche ich eine Genehmigung?"]),
    (["sh-bauvorbescheid"], ["Bauvoranfrage für ein Grundstück"]),
    (["sh-bauakteneinsicht"], ["Einsicht in die Bauakte unseres Hauses"]),
    (["sh-baumfaellung"], ["Darf ich die Eiche in meinem Garten fällen?", "Baum fällen Genehmigung"]),
    (["sh-sondernutzung"], ["Container auf die Straße stellen, Sondernutzung"]),
    (["sh-halteverbot-umzug"], ["Halteverbot für den Umzugswagen", "Parkverbot für Umzug einrichten"]),
    (["sh-hausnummer"], ["Hausnummer für unseren Neubau"]),
    (["sh-grundsteuer"], ["Frage zum Grundsteuerbescheid", "Grundsteuer zu hoch"]),
    (["sh-bebauungsplan"], ["Bebauungsplan einsehen"]),
    (["sh-strassenschaden"], ["Schlagloch in der Straße melden", "Die Straßenlaterne vor unserem Haus ist kaputt", "Straßenschaden melden"]),
    (["sh-waffenbesitzkarte"], ["Waffenbesitzkarte beantragen"]),
    (["sh-kleiner-waffenschein"], ["kleiner Waffenschein"]),
    (["sh-jagdschein"], ["Jagdschein verlängern"]),
    (["sh-fischereischein"], ["Angelschein beantragen", "Fischereischein"]),
    (["sh-brauchtumsfeuer"], ["Osterfeuer anmelden"]),
    (["sh-aufenthaltserlaubnis"], ["Aufenthaltserlaubnis verlängern", "Mein Aufenthaltstitel läuft ab"]),
    (["sh-niederlassungserlaubnis"], ["Niederlassungserlaubnis beantragen"]),
    (["sh-verpflichtungserklaerung"], ["Verpflichtungserklärung für Besuch aus dem Ausland"]),
    (["sh-einbuergerung"], ["Einbürgerung beantragen", "Ich möchte deutscher Staatsbürger werden"]),
    (["sh-infektionsschutz-belehrung"], ["Rote Karte Gesundheitszeugnis für die Gastronomie", "Belehrung nach Infektionsschutzgesetz"]),
    (["sh-trinkwasser"], ["Brunnenwasser untersuchen lassen"]),
    (["sh-lebensmittelbeschwerde"], ["Im Restaurant war es eklig, Hygiene melden"]),
    (["sh-abfallbehaelter"], ["Mülltonne anmelden", "größere Restmülltonne bestellen", "Biotonne abbestellen"]),
    (["sh-sperrmuell"], ["Sperrmüll anmelden", "Wann wird Sperrmüll abgeholt? Ich habe ein altes Sofa"]),
]

# Requests nothing in any catalogue answers: every routed answer is wrong.
UNMATCHED = [
    "Wie wird das Wetter morgen", "Mein Internet ist seit Tagen gestört", "Wann fährt der letzte Bus nach Hamburg",
    "Ich möchte meine Steuererklärung abgeben", "Hallo", "Danke für die schnelle Hilfe",
    "Kann ich bei Ihnen ein Praktikum machen?", "Wo ist die nächste Apotheke?", "Mein Nachbar grillt jeden Abend",
    "Ich möchte mich über den Busfahrer beschweren", "Mein Stromzähler ist kaputt", "Kündigung meines Handyvertrags",
    "Rezept für Apfelkuchen", "asdf qwer", "Wann hat das Schwimmbad geöffnet?", "Ich suche eine Wohnung zur Miete",
    "Meine Krankenkasse zahlt nicht", "Rentenantrag bei der Rentenversicherung", "Ich habe einen Unfall gebaut, die Versicherung zahlt nicht",
    "Wie kündige ich mein Zeitungsabo", "Öffnungszeiten des Baumarkts", "Ich will mich beschweren",
    "Frage", "Termin", "Gibt es hier WLAN?", "Wer hat die Fußball-WM gewonnen",
]

# München: ids of the DLDB export (../shared/data/catalogs/muenchen), imported with --region 091620000000.
MUENCHEN = [
    (["091620000000-1063475"], ["Wohnsitz anmelden", "Ich bin nach München gezogen und muss mich anmelden", "Anmeldung Wohnung"]),
    (["091620000000-1063486"], ["Wohnsitz abmelden, ich ziehe ins Ausland"]),
    (["091620000000-1063441"], ["Personalausweis beantragen", "neuer Personalausweis"]),
    (["091620000000-1063453"], ["Reisepass beantragen", "Ich brauche einen neuen Reisepass"]),
    (["091620000000-1080582"], ["vorläufiger Reisepass"]),
    (["091620000000-1076889"], ["Personalausweis gestohlen"]),
    (["091620000000-1063423"], ["Gewerbe anmelden", "Gewerbeanmeldung"]),
    (["091620000000-1063435"], ["Gewerbe abmelden"]),
    (["091620000000-1063565"], ["Führungszeugnis beantragen"]),
    (["091620000000-1063576"], ["Meldebescheinigung"]),
    (["091620000000-1063425"], ["Neuwagen zulassen"]),
    (["091620000000-1064305"], ["Auto abmelden", "Fahrzeug abmelden"]),
    (["091620000000-1072043"], ["Bewohnerparkausweis beantragen", "Anwohnerparkausweis"]),
    (["091620000000-1071896"], ["ausländischen Führerschein umschreiben"]),
    (["091620000000-1071907"], ["Einbürgerung beantragen"]),
    (["091620000000-1063731"], ["Kirchenaustritt erklären", "aus der Kirche austreten"]),
    (["091620000000-1072647"], ["Waffenbesitzkarte"]),
    (["091620000000-1073758"], ["Fischereischein beantragen"]),
    (["091620000000-1064311"], ["Oldtimer Kennzeichen"]),
    (["091620000000-1064323"], ["Kurzzeitkennzeichen"]),
    (["091620000000-1063519"], ["Fundsache abholen, ich habe meinen Rucksack verloren"]),
    (["091620000000-1063648"], ["Wir wollen heiraten, Eheschließung anmelden"]),
    (["091620000000-1063655"], ["Sterbeurkunde beantragen"]),
    (["091620000000-1074970"], ["BAföG beantragen"]),
]

# Berlin: ids of the 2016 DLDB export (../shared/data/catalogs/berlin-2016), imported with --region 110000000000.
BERLIN = [
    (["110000000000-120686"], ["Wohnung anmelden", "Ich bin nach Berlin gezogen, Anmeldung", "Wohnsitz anmelden"]),
    (["110000000000-120335"], ["Wohnung abmelden"]),
    (["110000000000-120703"], ["Personalausweis beantragen", "neuen Perso beantragen"]),
    (["110000000000-121151"], ["Reisepass beantragen", "Reisepass abgelaufen"]),
    (["110000000000-121368"], ["Reisepass verloren"]),
    (["110000000000-121494"], ["Hund anmelden", "Hundesteuer anmelden"]),
    (["110000000000-324161"], ["Hund abmelden"]),
    (["110000000000-120702"], ["Meldebescheinigung beantragen"]),
    (["110000000000-120926"], ["Führungszeugnis beantragen"]),
    (["110000000000-318998"], ["Einbürgerung"]),
    (["110000000000-326079"], ["Elterngeld beantragen"]),
    (["110000000000-121627"], ["Führerschein erstmals beantragen"]),
    (["110000000000-121591"], ["internationaler Führerschein"]),
    (["110000000000-121589"], ["begleitetes Fahren mit 17"]),
    (["110000000000-324873"], ["Kita-Gutschein beantragen"]),
    (["110000000000-121737"], ["Schwerbehindertenausweis"]),
    (["110000000000-121721"], ["Bewohnerparkausweis verlängern"]),
    (["110000000000-324328"], ["Fundsachen suchen und abholen"]),
    (["110000000000-120877"], ["Auto abmelden, Außerbetriebsetzung"]),
    (["110000000000-122107"], ["Gewerbe abmelden"]),
]

# Places. Kreis Segeberg municipalities as a citizen gives them (field) and in the text.
SEGEBERG_PLACES = [
    "Henstedt-Ulzburg", "Bad Segeberg", "Norderstedt", "Kaltenkirchen", "Bad Bramstedt", "Wahlstedt", "Ellerau",
    "Todesfelde", "Leezen", "Trappenkamp", "Boostedt", "Kisdorf", "Itzstedt", "Bornhöved", "Rickling",
    "24568 Kaltenkirchen", "22846 Norderstedt", "Henstedt-Ulzbrug", "Gemeinde Wahlstedt", "Nahe", "Sülfeld",
]
SEGEBERG_IN_TEXT = [
    "in Henstedt-Ulzburg", "in Norderstedt", "nach Kaltenkirchen", "in Bad Segeberg", "in Trappenkamp",
    "in Bad Bramstedt", "in 24558 Henstedt-Ulzburg", "in Wahlstedt", "nach Ellerau", "in Leezen",
]
# Postcodes and names that fit several places of the county.
SEGEBERG_AMBIGUOUS = ["23795", "Seedorf", "24576", "Wakendorf", "23845", "24641"]
MUENCHEN_PLACES = ["München", "80331 München", "Landeshauptstadt München"]
BERLIN_PLACES = ["Berlin", "10115 Berlin", "Berlin-Mitte"]
