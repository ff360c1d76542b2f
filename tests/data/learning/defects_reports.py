# Source of defects.jsonl, defects_more.jsonl and defects_heldout.jsonl: hand-written German defect reports
# in the style of municipal "Mängelmelder" services (Klarschiff, Sag's uns, Maerker); see README.md.
# Regenerate all three with `python defects_reports.py` in this folder. defects.jsonl is the block R below;
# defects_more.jsonl and defects_heldout.jsonl come from the "== <service id>" blocks of the .txt files.
import csv
import json

R = {
"beleuchtung": """Laterne vor Haus 12 ist aus
Die Straßenlampe an der Ecke Lindenweg flackert seit Tagen
seit einer woche ist es abends stockdunkel in der Bahnhofstraße, alle lampen aus
Straßenlaterne defekt, Mastnummer 4711
Beleuchtung im Fußweg zum Friedhof geht nicht
Leuchte brennt auch tagsüber durchgehend, Energieverschwendung
Lampe am Spielplatzweg kaputt, Kinder laufen im Dunkeln
Laternenmast umgefahren, Kabel hängen raus!
Die Straßenbeleuchtung im ganzen Wohngebiet ist ausgefallen
Licht an der Bushaltestelle geht nicht mehr an
Latterne kaputt seit montag
bei uns in der Siedlung sind drei Laternen hintereinander dunkel, bitte reparieren
Die Lampe am Parkplatz Rathaus geht ständig an und aus
Leuchtkopf hängt schief herunter und wackelt bei Wind
Unterführung komplett unbeleuchtet, man fühlt sich unsicher
Glas der Laterne ist eingeschlagen, Birne aus
Fußgängerüberweg nachts nicht beleuchtet, Laterne ohne Funktion""",
"schlagloch": """Riesiges Schlagloch auf der Hauptstraße Höhe Nr. 30
Schlaglöcher in der Zufahrt zum Gewerbegebiet, mein Reifen ist platt
Asphalt aufgebrochen nach dem Frost, tiefe Löcher in der Fahrbahn
Fahrbahn abgesackt an der Kreuzung, gefährlich für Motorradfahrer
Straße voller Löcher, bitte ausbessern
Das Loch in der Straße wird immer größer, mittlerweile 20 cm tief
Bodenwelle und Risse in der Fahrbahndecke vor der Schule
Schlagloch direkt hinter dem Kreisel
Straßenbelag löst sich, überall Splitt auf der Fahrbahn
Spurrinnen und Löcher auf der Dorfstraße, Wasser bleibt stehen
schlagloch vor der einfahrt, auto setzt auf
Kanaldeckel ist abgesackt, tiefes Loch in der Straße drumherum
Fahrbahnschaden nach Bauarbeiten nicht richtig verschlossen
die Straße ist eine Buckelpiste, ständig neue Schlaglöcher
große Pfütze, darunter ein tiefes Loch im Asphalt
Straßendecke aufgeplatzt, Brocken liegen auf der Straße""",
"gehweg": """Gehwegplatten lose, Stolperfalle vor der Apotheke
Bürgersteig durch Baumwurzeln angehoben, meine Mutter ist gestürzt
Auf dem Fußweg fehlt eine Platte
Gehweg abgesackt, man knickt um
Pflastersteine auf dem Gehweg locker
Bordstein abgebrochen, Rollstuhl kommt nicht runter
Der Gehweg in der Schulstraße ist total kaputt, ältere Leute stolpern ständig
Platten wackeln auf dem Bürgersteig vor Hausnummer 8
Loch im Gehweg neben dem Hydranten
Fußweg nach Regen unbegehbar, Pflaster abgesackt
Absenkung am Bordstein fehlt für Kinderwagen
Stolperkante im Gehweg, ca. 5 cm hoch
gehwegplatte kaputt, wer ist dafür zuständig
Pflaster im Fußgängerbereich ausgebrochen
Randstein lose auf dem Gehsteig""",
"muell": """Jemand hat Sperrmüll an der Straße abgestellt
Wilde Müllkippe am Waldrand, Säcke und alte Möbel
Müll im Gebüsch neben dem Parkplatz
Alte Matratze und Sofa liegen seit Wochen am Feldweg
illegal entsorgter Bauschutt hinter der Halle
Mehrere Müllsäcke einfach am Straßenrand abgeladen
Altreifen im Graben entsorgt
Kühlschrank auf dem Gehweg abgestellt, niemand holt ihn ab
Hausmüll neben den Glascontainern abgestellt? nein, mitten auf der Wiese am Bach
Elektroschrott und Farbeimer im Wald abgeladen
Jemand kippt regelmäßig Gartenabfälle in den Park
wilde Müllablagerung an der Autobahnbrücke
Sperrmüllhaufen wächst jeden Tag, Ratten schon da
Ein Haufen Renovierungsabfälle liegt hinter dem Spielplatz
Mülltüten im Straßengraben, riecht schon
Teppiche und Kartons am Wendehammer abgelegt""",
"scherben": """Scherben an der Bushaltestelle
Überall Glasscherben auf dem Radweg, mein Schlauch ist platt
zerbrochene Bierflaschen auf dem Spielplatzweg
Glassplitter auf dem Gehweg vor dem Kiosk
Nach der Party am Wochenende liegen Scherben auf dem ganzen Platz
Ölspur auf der Straße, sehr rutschig
Erbrochenes und Dreck im Eingang der Unterführung
Hundekot überall auf dem Weg zur Schule
Glasflasche zerschlagen vor dem Kindergarten, gefährlich
Straße nach dem Markt total verdreckt
Scherben im Sandkasten? nein auf dem Parkplatz vor dem Supermarkt
Verschmutzung durch Baustellenfahrzeuge, Schlamm auf der Fahrbahn
viele Glasscherben am Ufer wo Kinder baden
Kaputte Flaschen auf der Treppe zum Bahnhof
Fahrbahn verschmutzt, Erde und Matsch vom Acker""",
"graffiti": """Graffiti an der Schulwand
Jemand hat die Bushaltestelle mit Farbe beschmiert
Hakenkreuz an die Brücke gesprüht, bitte schnell entfernen
Schmierereien am Rathaus
Tags auf dem neuen Trafohaus
Die Lärmschutzwand ist komplett besprüht
Beleidigende Sprüche an der Unterführung gesprayt
Farbschmierereien auf dem Denkmal
Graffity am Spielplatzhäuschen
Sprayer haben die Fassade der Turnhalle verunstaltet
Aufkleber und Schmiererei überall auf den Verkehrsschildern? nein auf dem Stromkasten
Wand der Sporthalle vollgesprüht
politische Parolen an die Kirche geschmiert
neue Graffitis an der Bahnunterführung
Edding-Gekritzel in der Haltestelle""",
"autowrack": """Smart ohne Kennzeichen steht seit Wochen da
Autowrack auf dem Parkplatz am See, Scheiben eingeschlagen
abgemeldetes Fahrzeug blockiert seit Monaten einen Parkplatz
Ein PKW ohne Nummernschilder steht in der Seitenstraße
verlassenes Auto mit platten Reifen vor dem Haus
Wohnwagen ohne Zulassung parkt dauerhaft am Straßenrand
alter Golf, total verrostet, bewegt sich nie, kein TÜV seit Jahren
Anhänger ohne Kennzeichen abgestellt
Schrottauto im Wendehammer
ausgebranntes Auto am Waldweg
Motorroller ohne Kennzeichen liegt seit Wochen im Gebüsch
Transporter ohne Nummer seit dem Sommer vor der Garage
Fahrzeug mit abgelaufener Zulassung, voller Laub und Moos
Auto steht da seit Ewigkeiten, Kennzeichen entfernt
Ein Boot auf einem Trailer ohne Kennzeichen am Straßenrand""",
"fahrradwrack": """Fahrradleiche am Bahnhof
Schrottrad ohne Sattel und Vorderrad am Fahrradständer
Seit Monaten angekettetes kaputtes Fahrrad an der Laterne
mehrere verrostete Räder blockieren den Fahrradständer an der Schule
Fahrradwrack im Bach
Altes Fahrrad ohne Reifen am Geländer angeschlossen
kaputtes Rad liegt im Gebüsch
herrenloses Fahrrad seit einem Jahr am Schwimmbad
Fahrradständer voll mit Schrotträdern
verbogenes Kinderrad liegt auf der Wiese
Rad mit Platten und Rost, da holt keiner mehr ab
Fahrrad ohne Kette und Lenker am Bahnhofsplatz
Schrottfahrrad angeschlossen an der Bushaltestelle
abgestelltes Lastenrad, völlig zerlegt""",
"gruen": """Rasen im Park seit Wochen nicht gemäht
Hecke ragt weit in den Gehweg, man kommt nicht vorbei
Gras auf dem Grünstreifen kniehoch
Unkraut wuchert auf dem Mittelstreifen
Büsche verdecken die Sicht an der Einmündung
Blumenbeet am Marktplatz verwildert
Die Grünanlage am Teich ist total ungepflegt
Brennnesseln und Brombeeren überwuchern den Fußweg
Hecke am Radweg müsste dringend geschnitten werden
Rasenfläche durch Autos zerfahren
Gestrüpp wächst über das Geländer
Pflanzkübel in der Fußgängerzone vertrocknet
grünstreifen verwahrlost, voller Unkraut
Sträucher an der Kreuzung zu hoch, Kinder werden übersehen
Laub wird im Park nicht entfernt, Wege rutschig""",
"baum": """Großer Ast droht abzubrechen über dem Gehweg
Baum nach Sturm umgestürzt, liegt halb auf der Straße
Abgebrochener Ast hängt in der Krone
Baum ist morsch und hohl, Gefahr
Wurzeln heben die Straße an? nein, der Baum neigt sich gefährlich zum Haus
Äste ragen in die Fahrbahn, LKW streifen sie
Straßenbaum abgestorben, keine Blätter mehr
Pilzbefall am Stamm der alten Eiche
Sturmschaden: mehrere Äste auf dem Spielplatz
Baumscheibe ohne Baum, nur noch Stumpf
Totholz in der Linde vor der Schule
Baum wurde angefahren, Rinde abgerissen
Kastanie verliert große Äste
umgeknickter junger Baum an der Allee""",
"spielplatz": """Schaukel auf dem Spielplatz kaputt, Kette gerissen
Rutsche hat scharfe Kante, Kind hat sich geschnitten
Sandkasten voller Hundekot und Zigarettenkippen
Klettergerüst wackelt bedenklich
Spielgerät beschädigt, Bretter fehlen
Wippe abgebrochen
Zaun am Spielplatz kaputt, Kinder laufen auf die Straße
Seilbahn auf dem Spielplatz funktioniert nicht mehr
Spielhaus beschmiert und Dach eingeschlagen
Spritzen im Sand am Spielplatz gefunden!
Fallschutzmatten lösen sich
Karussell quietscht und dreht sich schief
Nägel stehen aus dem Holzturm heraus
Das Tor zum Spielplatz schließt nicht mehr""",
"ampel": """Ampel an der Kreuzung Hauptstraße/Bahnhofstraße fällt immer wieder aus
Fußgängerampel bleibt ewig rot
Ampel blinkt nur gelb seit heute morgen
Die Grünphase für Fußgänger ist viel zu kurz
Signalgeber für Blinde tickt nicht mehr
Ampel komplett dunkel, gefährliche Situation
Bedarfsampel reagiert nicht auf den Taster
Linksabbieger-Ampel zeigt grün und rot gleichzeitig
Lichtsignalanlage ausgefallen
Ampelmast verbogen nach Unfall
Ampel an der Schule schaltet nicht, Kinder rennen bei Rot
Lampe in der Ampel durchgebrannt, Rot nicht sichtbar
Fußgängerampel Knopf abgerissen""",
"schilder": """Verkehrsschild umgefahren
Stoppschild verdreht, zeigt in die falsche Richtung
Vorfahrtsschild von Büschen verdeckt
Straßennamensschild fehlt
Tempo-30-Schild wurde gestohlen
Schild liegt im Graben
Verkehrszeichen völlig verblasst, nicht mehr lesbar
Baustellenschild steht noch da, obwohl die Baustelle seit Monaten weg ist
Einbahnstraßenschild fehlt an der Einmündung
Halteverbotsschild verbogen
Wegweiser zum Bahnhof zeigt in die falsche Richtung
schild ist überklebt mit Aufklebern und nicht lesbar
Zusatzzeichen abgefallen
Ortsschild beschädigt""",
"papierkorb": """Papierkorb am Marktplatz quillt über
Mülleimer an der Haltestelle seit Tagen voll
Abfalleimer kaputt, Boden fehlt
Der Mülleimer im Park wird nie geleert
Papierkorb abgerissen, liegt am Boden
überfüllte Abfallbehälter am Badesee
Hundekotbeutelspender leer und Eimer voll
Mülleimer verbrannt
Kein Papierkorb an der Bank, überall Müll daneben
Abfallbehälter am Spielplatz läuft über, Wespen
Mülleimer an der Bushaltestelle fehlt seit dem Umbau
Papierkorb voll, Krähen verteilen den Inhalt""",
"container": """Altglascontainer überfüllt, Flaschen stehen daneben
Am Containerstandort liegt alles voll mit Kartons
Altkleidercontainer aufgebrochen, Kleidung liegt herum
Glascontainer werden zu selten geleert
Müll rund um die Wertstoffcontainer
Papiercontainer voll, Leute stellen Pappe daneben
Container für Altglas ist beschädigt, Klappe fehlt
Beim Glascontainer stapeln sich Tüten mit Hausmüll
Altkleidersammelbox quillt über
Containerplatz am Supermarkt total vermüllt
Einwurf vom Altglascontainer verklemmt
Gelbe Säcke am Containerstandort abgelegt""",
"gully": """Gully verstopft, Straße steht unter Wasser
Kanaldeckel klappert laut bei jedem Auto
Abwasser riecht stark aus dem Schacht
Straßenablauf voller Laub, Wasser läuft nicht ab
Gullydeckel fehlt! Loch offen
Bei Regen überflutet die Kreuzung, Ablauf zu
Es stinkt aus dem Kanal nach faulen Eiern
Regenwasser staut sich vor der Garage, Gully zu
Schachtdeckel hebt sich bei Starkregen
Kanal läuft über, Brühe auf der Straße
Sinkkasten ist kaputt, Rost hängt schief
Regeneinlauf verstopft mit Sand""",
"falschparker": """Auto parkt seit Stunden auf dem Gehweg, Kinderwagen kommt nicht vorbei
Falschparker in der Feuerwehrzufahrt
LKW steht im absoluten Halteverbot
Jemand parkt ständig auf dem Behindertenparkplatz ohne Ausweis
Autos parken auf dem Radweg
Zugeparkte Ausfahrt, ich komme nicht raus
Parken in zweiter Reihe vor der Schule jeden Morgen
Wohnmobil parkt dauerhaft auf dem Gehweg
Fahrzeug blockiert die Bushaltestelle
Auto steht auf der Grünfläche und im Kreuzungsbereich
Gehwegparker in der ganzen Straße
Einfahrt wird täglich zugeparkt""",
"winterdienst": """Gehweg nicht geräumt, spiegelglatt
Straße nicht gestreut, Autos rutschen
Schnee auf dem Radweg liegt seit Tagen
Treppe zur Unterführung vereist
Glatteis an der Bushaltestelle, ältere Frau gestürzt
Räumfahrzeug hat den Schnee auf den Gehweg geschoben
Splitt fehlt auf der Brücke, total glatt
Schneehaufen versperrt die Sicht an der Ausfahrt
Eisglätte vor der Grundschule
Nebenstraßen werden nie geräumt
Fußweg zum Bahnhof nicht gestreut""",
"tiere": """Totes Reh am Straßenrand
Überfahrene Katze auf der Fahrbahn
toter Fuchs auf dem Radweg
Tierkadaver im Bach, es stinkt
Tote Taube vor dem Eingang der Schule
Ein toter Igel liegt auf dem Gehweg
Totes Wildschwein im Graben
Tote Enten am Teich, vielleicht Vogelgrippe
totes Tier auf der Straße, bitte entfernen
Hase überfahren vor der Einfahrt
toter Dachs an der Landstraße""",
"schaedlinge": """Ratten am Spielplatz gesehen
Rattenplage an den Mülltonnen hinter dem Haus
Wespennest im Papierkorb an der Bank
Ratten laufen am Bachufer entlang, am hellen Tag
Eichenprozessionsspinner am Schulweg
Tauben nisten unter der Brücke, alles voller Kot
Ratte im Kanalschacht gesehen
Mäuse und Ratten an der Kompostanlage
Nester vom Eichenprozessionsspinner an den Bäumen im Park
Rattenlöcher in der Grünanlage
Schaben im Keller des Gemeindehauses
Ratten nagen an den Müllsäcken am Containerplatz""",
"stadtmoebel": """Parkbank kaputt, Latte fehlt
Poller umgefahren
Fahrradständer abgerissen
Sitzbank am Teich beschmiert und wackelig
Geländer an der Treppe lose
Bank im Park zerbrochen
Absperrpfosten fehlt, Autos fahren in die Fußgängerzone
Fahrradbügel verbogen
Holzbank morsch, man bricht ein
Geländer an der Brücke verbogen
Pflanzkübel umgestoßen und zerbrochen
Bank an der Bushaltestelle fehlt""",
"toilette": """Öffentliche Toilette am Markt verstopft
WC im Park seit Tagen geschlossen
Toilettenhäuschen verdreckt, kein Papier
Trinkbrunnen läuft nicht
Brunnen am Rathausplatz verschmutzt, Wasser grün
Tür der öffentlichen Toilette lässt sich nicht abschließen
Behindertentoilette am Bahnhof defekt
Wasserspiel am Brunnen ausgefallen
Springbrunnen voller Müll
Klo am Busbahnhof überflutet""",
"radweg": """Radweg voller Wurzelaufbrüche, gefährlich
Auf dem Fahrradweg fehlt die Markierung
Radweg endet plötzlich im Nichts
Hecke wächst in den Radweg
Bordstein am Radweg nicht abgesenkt
Fahrradweg nach Bauarbeiten nicht freigegeben, Baken stehen noch
Schlaglöcher auf dem Radweg entlang der Landstraße
Radwegbelag aufgerissen
Radweg ist zu schmal und holprig
Radfahrstreifen verblasst, Autos fahren drauf
Poller mitten auf dem Radweg ohne Reflektoren""",
}


with open("defects_catalogue.csv", encoding="utf-8") as fh:
    NAMES = {r["id"]: r["name"] for r in csv.DictReader(fh, delimiter=";")}


def line(text: str, service: str) -> str:
    return json.dumps({"text": text, "location": None, "service": NAMES[service], "authority": None},
                      ensure_ascii=False) + "\n"


def blocks(path: str) -> list[tuple[str, str]]:
    out, service = [], None
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            text = raw.strip()
            if text.startswith("== "):
                service = text[3:].strip()
            elif text:
                out.append((text, service))
    return out


if __name__ == "__main__":
    with open("defects.jsonl", "w", encoding="utf-8") as out:
        for service, block in R.items():
            for text in block.strip().splitlines():
                out.write(line(text.strip(), service))
    for name in ("defects_more", "defects_heldout"):
        with open(f"{name}.jsonl", "w", encoding="utf-8") as out:
            for text, service in blocks(f"{name}.txt"):
                out.write(line(text, service))
