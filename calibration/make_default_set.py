#!/usr/bin/env python
"""Generate quantkit's default calibration set: ``calibration/default/{samples.jsonl,images/*.png}``.

Every picture is drawn here (PIL shapes and text in the DejaVu fonts that matplotlib ships, matplotlib
charts rendered with the Agg canvas) and every sentence is written here, so the set holds no
third-party content. Each sample draws from its own RNG, seeded by its id, so two runs with the same
Pillow and matplotlib give byte-identical files, and a subset (``--kinds``) reproduces exactly the
same lines and images. See calibration/README.md for what the set holds and why it is this size.

    python calibration/make_default_set.py                    # rewrite calibration/default
    python calibration/make_default_set.py --out /tmp/calib --kinds chart,video
    python calibration/make_default_set.py --stats            # print the README's statistics
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "quantkit" / "data" / "default_calibration"  # calibration/default links here
FONT_DIR = Path(matplotlib.get_data_path(), "fonts", "ttf")
FONT_FILES = {"sans": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf", "mono": "DejaVuSansMono.ttf",
              "mono_bold": "DejaVuSansMono-Bold.ttf", "serif": "DejaVuSerif.ttf",
              "serif_italic": "DejaVuSerif-Italic.ttf"}
# Applied only while generating (rc_context), so importing this module changes no global state.
PLOT_STYLE = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10}

LANGS = ("en", "zh", "fr", "de", "es", "ru", "ja")
# Per 12 samples: 4 English, 3 Chinese, 1 each of French, German, Spanish, Russian, Japanese.
LANG_CYCLE = ("en", "zh", "en", "fr", "zh", "de", "en", "es", "zh", "ru", "en", "ja")
# Languages DejaVu can render inside pictures; Chinese/Japanese samples get English pictures.
RENDER_LANGS = ("en", "fr", "de", "es", "ru")
THINKING_LANGS = ("en", "zh")
THINKING_SHARE = 0.5  # of the eligible (kind, language) samples

# Real ERNIE-4.5-VL-28B-A3B processing, for the token estimates (--stats): one vision token per 28x28 px
# (14 px patches merged 2x2) within the image processor's pixel budget; video frames are also merged in
# pairs over time. Defaults of transformers' Ernie4_5_VLMoe{Image,Video}Processor.
REAL_IMAGE_PIXELS = (56 * 56, 28 * 28 * 6177)
REAL_VIDEO_PIXELS = (299 * 28 * 28, 1196 * 28 * 28)
REAL_EXPERTS, REAL_TOP_K = 64, 6


# ----------------------------------------------------------------------------------------------------
# Phrase tables: question and answer templates per language. R holds Thinking-mode reasoning (en, zh).
# ----------------------------------------------------------------------------------------------------

T: dict[str, dict[str, str]] = {
    # charts
    "bar_max_q": {
        "en": "Which category has the highest value in this bar chart, and what is that value?",
        "zh": "这张柱状图中哪个类别的数值最高？数值是多少？",
        "fr": "Quelle catégorie a la valeur la plus élevée dans ce diagramme en barres, et quelle est cette valeur ?",
        "de": "Welche Kategorie hat in diesem Balkendiagramm den höchsten Wert, und wie hoch ist er?",
        "es": "¿Qué categoría tiene el valor más alto en este gráfico de barras y cuál es ese valor?",
        "ru": "Какая категория имеет наибольшее значение на этой столбчатой диаграмме и каково оно?",
        "ja": "この棒グラフで最も値が大きいカテゴリはどれで、その値はいくつですか？",
    },
    "bar_max_a": {
        "en": "{label} has the highest value, {value}. The lowest is {min_label} with {min_value}.",
        "zh": "数值最高的是{label}，为{value}。最低的是{min_label}，为{min_value}。",
        "fr": "{label} a la valeur la plus élevée : {value}. La plus faible est {min_label}, avec {min_value}.",
        "de": "{label} hat den höchsten Wert: {value}. Den niedrigsten hat {min_label} mit {min_value}.",
        "es": "{label} tiene el valor más alto: {value}. El más bajo es {min_label}, con {min_value}.",
        "ru": "Наибольшее значение у {label}: {value}. Наименьшее — у {min_label}: {min_value}.",
        "ja": "最も値が大きいのは{label}で、{value}です。最も小さいのは{min_label}で、{min_value}です。",
    },
    "bar_read_q": {
        "en": "List the value of every bar in the chart.",
        "zh": "请列出图中每个柱子的数值。",
        "fr": "Donne la valeur de chaque barre du graphique.",
        "de": "Nenne den Wert jedes Balkens im Diagramm.",
        "es": "Indica el valor de cada barra del gráfico.",
        "ru": "Перечисли значения всех столбцов на диаграмме.",
        "ja": "グラフの各棒の値をすべて挙げてください。",
    },
    "bar_read_a": {
        "en": "The chart \"{title}\" shows:\n{lines}\nThe total is {total}.",
        "zh": "图表“{title}”中各柱的数值如下：\n{lines}\n总和为{total}。",
        "fr": "Le graphique « {title} » indique :\n{lines}\nLe total est de {total}.",
        "de": "Das Diagramm „{title}“ zeigt:\n{lines}\nDie Summe beträgt {total}.",
        "es": "El gráfico «{title}» muestra:\n{lines}\nEl total es {total}.",
        "ru": "Диаграмма «{title}» показывает:\n{lines}\nСумма равна {total}.",
        "ja": "グラフ「{title}」の値は次のとおりです：\n{lines}\n合計は{total}です。",
    },
    "line_trend_q": {
        "en": "Describe the trend shown in this line chart.",
        "zh": "请描述这张折线图的趋势。",
        "fr": "Décris la tendance de ce graphique linéaire.",
        "de": "Beschreibe den Verlauf in diesem Liniendiagramm.",
        "es": "Describe la tendencia de este gráfico de líneas.",
        "ru": "Опиши тенденцию на этом линейном графике.",
        "ja": "この折れ線グラフの傾向を説明してください。",
    },
    "line_trend_a": {
        "en": "Overall the series {trend}: it starts at {first} ({x0}) and ends at {last} ({x1}). "
              "The highest value is {max} ({xmax}); the lowest is {min} ({xmin}).",
        "zh": "整体来看，数据{trend}：从{x0}的{first}开始，到{x1}的{last}结束。最高值为{max}（{xmax}），最低值为{min}（{xmin}）。",
        "fr": "Globalement, la série {trend} : elle commence à {first} ({x0}) et finit à {last} ({x1}). "
              "La valeur maximale est {max} ({xmax}) ; la minimale est {min} ({xmin}).",
        "de": "Insgesamt {trend} die Reihe: Sie beginnt bei {first} ({x0}) und endet bei {last} ({x1}). "
              "Der höchste Wert ist {max} ({xmax}), der niedrigste {min} ({xmin}).",
        "es": "En general, la serie {trend}: empieza en {first} ({x0}) y termina en {last} ({x1}). "
              "El valor máximo es {max} ({xmax}) y el mínimo, {min} ({xmin}).",
        "ru": "В целом ряд {trend}: он начинается с {first} ({x0}) и заканчивается на {last} ({x1}). "
              "Максимум — {max} ({xmax}), минимум — {min} ({xmin}).",
        "ja": "全体として、データは{trend}。{x0}の{first}から始まり、{x1}の{last}で終わります。"
              "最大値は{max}（{xmax}）、最小値は{min}（{xmin}）です。",
    },
    "line_max_q": {
        "en": "At which x-axis label is the value highest, and what is it?",
        "zh": "横轴上哪个位置的数值最高？是多少？",
        "fr": "Pour quelle étiquette de l'axe des x la valeur est-elle la plus élevée, et quelle est-elle ?",
        "de": "Bei welcher Beschriftung der x-Achse ist der Wert am höchsten, und wie hoch ist er?",
        "es": "¿En qué etiqueta del eje x el valor es más alto y cuál es?",
        "ru": "При какой отметке на оси X значение максимально и каково оно?",
        "ja": "横軸のどの位置で値が最も大きく、その値はいくつですか？",
    },
    "line_max_a": {
        "en": "The highest value is {max}, at {xmax}.",
        "zh": "最高值出现在{xmax}，为{max}。",
        "fr": "La valeur la plus élevée est {max}, pour {xmax}.",
        "de": "Der höchste Wert ist {max} bei {xmax}.",
        "es": "El valor más alto es {max}, en {xmax}.",
        "ru": "Максимальное значение {max} приходится на {xmax}.",
        "ja": "最大値は{xmax}の{max}です。",
    },
    "pie_max_q": {
        "en": "Which segment of the pie chart is the largest, and what share does it have?",
        "zh": "饼图中哪一部分最大？占比多少？",
        "fr": "Quelle part du diagramme circulaire est la plus grande, et quel pourcentage représente-t-elle ?",
        "de": "Welches Segment des Kreisdiagramms ist am größten, und welchen Anteil hat es?",
        "es": "¿Qué sector del gráfico circular es el mayor y qué porcentaje representa?",
        "ru": "Какой сектор круговой диаграммы самый большой и какова его доля?",
        "ja": "円グラフで最も大きい部分はどれで、割合は何パーセントですか？",
    },
    "pie_max_a": {
        "en": "{label} is the largest segment with {value}%.",
        "zh": "最大的部分是{label}，占{value}%。",
        "fr": "{label} est la plus grande part, avec {value} %.",
        "de": "{label} ist das größte Segment mit {value} %.",
        "es": "{label} es el sector más grande, con un {value} %.",
        "ru": "Самый большой сектор — {label}, {value} %.",
        "ja": "最も大きいのは{label}で、{value}%です。",
    },
    "pie_pair_q": {
        "en": "What is the combined share of {a} and {b}?",
        "zh": "{a}和{b}合计占多少？",
        "fr": "Quelle est la part cumulée de {a} et {b} ?",
        "de": "Wie groß ist der gemeinsame Anteil von {a} und {b}?",
        "es": "¿Cuál es la participación conjunta de {a} y {b}?",
        "ru": "Какова общая доля {a} и {b}?",
        "ja": "{a}と{b}を合わせた割合はいくつですか？",
    },
    "pie_pair_a": {
        "en": "{a} has {va}% and {b} has {vb}%, so together they account for {total}%.",
        "zh": "{a}占{va}%，{b}占{vb}%，合计{total}%。",
        "fr": "{a} représente {va} % et {b} {vb} %, soit {total} % au total.",
        "de": "{a} hat {va} % und {b} {vb} %, zusammen also {total} %.",
        "es": "{a} tiene un {va} % y {b} un {vb} %, así que juntos suman un {total} %.",
        "ru": "Доля {a} — {va} %, доля {b} — {vb} %, вместе {total} %.",
        "ja": "{a}は{va}%、{b}は{vb}%なので、合計は{total}%です。",
    },
    "multi_q": {
        "en": "Compare the two charts. Which one has the larger total, and by how much?",
        "zh": "比较这两张图表：哪一张的总和更大？大多少？",
        "fr": "Compare les deux graphiques. Lequel a le total le plus élevé, et de combien ?",
        "de": "Vergleiche die beiden Diagramme. Welches hat die größere Summe, und um wie viel?",
        "es": "Compara los dos gráficos. ¿Cuál tiene el total más alto y por cuánto?",
        "ru": "Сравни две диаграммы. У какой из них сумма больше и на сколько?",
        "ja": "2つのグラフを比較してください。合計が大きいのはどちらで、どれだけ大きいですか？",
    },
    "multi_a": {
        "en": "Picture 1 ({y1}) adds up to {t1} and Picture 2 ({y2}) to {t2}, so Picture {k} is larger by {d}.",
        "zh": "图1（{y1}）合计{t1}，图2（{y2}）合计{t2}，所以图{k}更大，多{d}。",
        "fr": "L'image 1 ({y1}) totalise {t1} et l'image 2 ({y2}) {t2} : l'image {k} l'emporte donc de {d}.",
        "de": "Bild 1 ({y1}) ergibt zusammen {t1}, Bild 2 ({y2}) {t2}; Bild {k} ist also um {d} größer.",
        "es": "La imagen 1 ({y1}) suma {t1} y la imagen 2 ({y2}), {t2}, así que la imagen {k} es mayor por {d}.",
        "ru": "Сумма на изображении 1 ({y1}) — {t1}, на изображении 2 ({y2}) — {t2}, значит, на изображении {k} она больше на {d}.",
        "ja": "画像1（{y1}）の合計は{t1}、画像2（{y2}）の合計は{t2}なので、画像{k}の方が{d}大きいです。",
    },
    # documents
    "receipt_total_q": {
        "en": "What is the total amount on this receipt?",
        "zh": "这张收据的总金额是多少？",
        "fr": "Quel est le montant total de ce ticket de caisse ?",
        "de": "Wie hoch ist der Gesamtbetrag auf diesem Kassenbon?",
        "es": "¿Cuál es el importe total de este recibo?",
        "ru": "Какова итоговая сумма в этом чеке?",
        "ja": "このレシートの合計金額はいくらですか？",
    },
    "receipt_total_a": {
        "en": "The total is {total} (subtotal {subtotal} plus tax {tax}).",
        "zh": "总金额为{total}（小计{subtotal}，税费{tax}）。",
        "fr": "Le total est de {total} (sous-total {subtotal} plus TVA {tax}).",
        "de": "Der Gesamtbetrag ist {total} (Zwischensumme {subtotal} plus MwSt. {tax}).",
        "es": "El total es {total} (subtotal {subtotal} más IVA {tax}).",
        "ru": "Итого {total} (промежуточный итог {subtotal} плюс НДС {tax}).",
        "ja": "合計は{total}です（小計{subtotal}、税{tax}）。",
    },
    "receipt_items_q": {
        "en": "List the purchased items with their quantities and prices as JSON.",
        "zh": "请以JSON格式列出所购商品及其数量和价格。",
        "fr": "Liste les articles achetés avec leurs quantités et leurs prix au format JSON.",
        "de": "Liste die gekauften Artikel mit Menge und Preis als JSON auf.",
        "es": "Enumera los artículos comprados con sus cantidades y precios en formato JSON.",
        "ru": "Перечисли купленные товары с количеством и ценой в формате JSON.",
        "ja": "購入した商品を数量と価格とともにJSON形式で列挙してください。",
    },
    "form_q": {
        "en": "Extract the filled-in fields of this form as JSON.",
        "zh": "请将这张表格中填写的字段提取为JSON。",
        "fr": "Extrais les champs remplis de ce formulaire au format JSON.",
        "de": "Extrahiere die ausgefüllten Felder dieses Formulars als JSON.",
        "es": "Extrae los campos rellenados de este formulario en formato JSON.",
        "ru": "Извлеки заполненные поля этой формы в формате JSON.",
        "ja": "このフォームに記入された項目をJSONとして抽出してください。",
    },
    "ocr_q": {
        "en": "Transcribe all the text in this image.",
        "zh": "请识别并转写图片中的全部文字。",
        "fr": "Transcris tout le texte de cette image.",
        "de": "Transkribiere den gesamten Text in diesem Bild.",
        "es": "Transcribe todo el texto de esta imagen.",
        "ru": "Перепиши весь текст с этого изображения.",
        "ja": "この画像内のテキストをすべて書き起こしてください。",
    },
    # tables
    "table_lookup_q": {
        "en": "What is the \"{col}\" value for {row}?",
        "zh": "{row}的“{col}”是多少？",
        "fr": "Quelle est la valeur de « {col} » pour {row} ?",
        "de": "Welchen Wert hat „{col}“ für {row}?",
        "es": "¿Cuál es el valor de «{col}» para {row}?",
        "ru": "Какое значение «{col}» у {row}?",
        "ja": "{row}の「{col}」の値はいくつですか？",
    },
    "table_lookup_a": {
        "en": "For {row}, \"{col}\" is {value}.",
        "zh": "{row}的“{col}”为{value}。",
        "fr": "Pour {row}, « {col} » vaut {value}.",
        "de": "Für {row} beträgt „{col}“ {value}.",
        "es": "Para {row}, «{col}» es {value}.",
        "ru": "У {row} значение «{col}» равно {value}.",
        "ja": "{row}の「{col}」は{value}です。",
    },
    "table_md_q": {
        "en": "Convert this table to Markdown.",
        "zh": "请把这张表格转换成Markdown格式。",
        "fr": "Convertis ce tableau en Markdown.",
        "de": "Wandle diese Tabelle in Markdown um.",
        "es": "Convierte esta tabla a Markdown.",
        "ru": "Преобразуй эту таблицу в Markdown.",
        "ja": "この表をMarkdown形式に変換してください。",
    },
    "table_max_q": {
        "en": "Which row has the highest \"{col}\"?",
        "zh": "哪一行的“{col}”最高？",
        "fr": "Quelle ligne a la valeur « {col} » la plus élevée ?",
        "de": "Welche Zeile hat den höchsten Wert bei „{col}“?",
        "es": "¿Qué fila tiene el mayor valor de «{col}»?",
        "ru": "В какой строке значение «{col}» наибольшее?",
        "ja": "「{col}」が最も大きいのはどの行ですか？",
    },
    "table_max_a": {
        "en": "{row} has the highest \"{col}\": {value}.",
        "zh": "“{col}”最高的是{row}，为{value}。",
        "fr": "C'est {row}, avec {value}.",
        "de": "{row} hat mit {value} den höchsten Wert.",
        "es": "Es {row}, con {value}.",
        "ru": "Наибольшее значение у {row}: {value}.",
        "ja": "最も大きいのは{row}で、{value}です。",
    },
    # diagrams
    "tri_q": {
        "en": "Find the length of the side marked x.",
        "zh": "求图中标为x的边长。",
        "fr": "Trouve la longueur du côté noté x.",
        "de": "Bestimme die Länge der mit x bezeichneten Seite.",
        "es": "Halla la longitud del lado marcado con x.",
        "ru": "Найди длину стороны, обозначенной x.",
        "ja": "図のxで示された辺の長さを求めてください。",
    },
    "tri_a": {
        "en": "By the Pythagorean theorem, x = √({a}² + {b}²) = √{s} = {c} cm.",
        "zh": "由勾股定理，x = √({a}² + {b}²) = √{s} = {c} cm。",
        "fr": "D'après le théorème de Pythagore, x = √({a}² + {b}²) = √{s} = {c} cm.",
        "de": "Nach dem Satz des Pythagoras gilt x = √({a}² + {b}²) = √{s} = {c} cm.",
        "es": "Por el teorema de Pitágoras, x = √({a}² + {b}²) = √{s} = {c} cm.",
        "ru": "По теореме Пифагора x = √({a}² + {b}²) = √{s} = {c} см.",
        "ja": "三平方の定理より、x = √({a}² + {b}²) = √{s} = {c} cmです。",
    },
    "rect_q": {
        "en": "What are the area and the perimeter of the rectangle?",
        "zh": "这个长方形的面积和周长各是多少？",
        "fr": "Quels sont l'aire et le périmètre du rectangle ?",
        "de": "Wie groß sind Flächeninhalt und Umfang des Rechtecks?",
        "es": "¿Cuáles son el área y el perímetro del rectángulo?",
        "ru": "Каковы площадь и периметр прямоугольника?",
        "ja": "この長方形の面積と周の長さはいくつですか？",
    },
    "rect_a": {
        "en": "Area = {w} × {h} = {area} cm²; perimeter = 2 × ({w} + {h}) = {per} cm.",
        "zh": "面积 = {w} × {h} = {area} cm²；周长 = 2 × ({w} + {h}) = {per} cm。",
        "fr": "Aire = {w} × {h} = {area} cm² ; périmètre = 2 × ({w} + {h}) = {per} cm.",
        "de": "Fläche = {w} × {h} = {area} cm²; Umfang = 2 × ({w} + {h}) = {per} cm.",
        "es": "Área = {w} × {h} = {area} cm²; perímetro = 2 × ({w} + {h}) = {per} cm.",
        "ru": "Площадь = {w} × {h} = {area} см²; периметр = 2 × ({w} + {h}) = {per} см.",
        "ja": "面積 = {w} × {h} = {area} cm²、周の長さ = 2 × ({w} + {h}) = {per} cmです。",
    },
    "lin_q": {
        "en": "Read the graph: what are the slope and the y-intercept of the line f(x)?",
        "zh": "根据图像，直线f(x)的斜率和y轴截距分别是多少？",
        "fr": "D'après le graphique, quels sont la pente et l'ordonnée à l'origine de la droite f(x) ?",
        "de": "Lies aus dem Graphen ab: Welche Steigung und welchen y-Achsenabschnitt hat die Gerade f(x)?",
        "es": "Según la gráfica, ¿cuáles son la pendiente y la ordenada en el origen de la recta f(x)?",
        "ru": "По графику определи угловой коэффициент прямой f(x) и точку её пересечения с осью y.",
        "ja": "グラフから、直線f(x)の傾きとy切片を読み取ってください。",
    },
    "lin_a": {
        "en": "The line crosses the y-axis at (0, {c}) and passes through (1, {c1}), so the slope is {m} "
              "and the y-intercept is {c}: f(x) = {expr}.",
        "zh": "直线经过(0, {c})和(1, {c1})，所以斜率为{m}，y轴截距为{c}，即f(x) = {expr}。",
        "fr": "La droite coupe l'axe des y en (0, {c}) et passe par (1, {c1}) : la pente vaut {m} et "
              "l'ordonnée à l'origine {c}, donc f(x) = {expr}.",
        "de": "Die Gerade schneidet die y-Achse in (0, {c}) und verläuft durch (1, {c1}); die Steigung ist "
              "also {m}, der y-Achsenabschnitt {c}: f(x) = {expr}.",
        "es": "La recta corta el eje y en (0, {c}) y pasa por (1, {c1}), así que la pendiente es {m} y la "
              "ordenada en el origen es {c}: f(x) = {expr}.",
        "ru": "Прямая пересекает ось y в точке (0, {c}) и проходит через (1, {c1}), поэтому угловой "
              "коэффициент равен {m}, а свободный член — {c}: f(x) = {expr}.",
        "ja": "直線は(0, {c})でy軸と交わり、(1, {c1})を通るので、傾きは{m}、y切片は{c}です。つまりf(x) = {expr}です。",
    },
    "quad_q": {
        "en": "What are the coordinates of the vertex of the parabola f(x), and does it open upwards or downwards?",
        "zh": "抛物线f(x)的顶点坐标是什么？开口向上还是向下？",
        "fr": "Quelles sont les coordonnées du sommet de la parabole f(x), et est-elle tournée vers le haut ou vers le bas ?",
        "de": "Welche Koordinaten hat der Scheitelpunkt der Parabel f(x), und ist sie nach oben oder nach unten geöffnet?",
        "es": "¿Cuáles son las coordenadas del vértice de la parábola f(x)? ¿Se abre hacia arriba o hacia abajo?",
        "ru": "Каковы координаты вершины параболы f(x) и куда направлены её ветви — вверх или вниз?",
        "ja": "放物線f(x)の頂点の座標は何ですか？上に開いていますか、下に開いていますか？",
    },
    "quad_a": {
        "en": "The vertex is at ({p}, {q}) and the parabola opens {dir}, so f(x) = {expr}.",
        "zh": "顶点为({p}, {q})，开口向{dir}，即f(x) = {expr}。",
        "fr": "Le sommet est en ({p}, {q}) et la parabole est tournée vers le {dir} : f(x) = {expr}.",
        "de": "Der Scheitelpunkt liegt bei ({p}, {q}), die Parabel ist nach {dir} geöffnet: f(x) = {expr}.",
        "es": "El vértice está en ({p}, {q}) y la parábola se abre hacia {dir}: f(x) = {expr}.",
        "ru": "Вершина находится в точке ({p}, {q}), ветви направлены {dir}: f(x) = {expr}.",
        "ja": "頂点は({p}, {q})で、{dir}に開いています。f(x) = {expr}です。",
    },
    "quad_up": {"en": "upwards", "zh": "上", "fr": "haut", "de": "oben", "es": "arriba", "ru": "вверх", "ja": "上"},
    "quad_down": {"en": "downwards", "zh": "下", "fr": "bas", "de": "unten", "es": "abajo", "ru": "вниз", "ja": "下"},
    "block_q": {
        "en": "Describe the flow in this block diagram. What comes directly after \"{x}\"?",
        "zh": "请描述这个框图的流程。“{x}”之后紧接着是哪一步？",
        "fr": "Décris le flux de ce schéma fonctionnel. Qu'est-ce qui vient juste après « {x} » ?",
        "de": "Beschreibe den Ablauf in diesem Blockdiagramm. Was folgt direkt auf „{x}“?",
        "es": "Describe el flujo de este diagrama de bloques. ¿Qué viene justo después de «{x}»?",
        "ru": "Опиши последовательность на этой блок-схеме. Что идёт сразу после «{x}»?",
        "ja": "このブロック図の流れを説明してください。「{x}」の直後には何が来ますか？",
    },
    "block_a": {
        "en": "The diagram has {n} stages: {chain}. Directly after \"{x}\" comes \"{y}\".",
        "zh": "该框图共有{n}个环节：{chain}。“{x}”之后是“{y}”。",
        "fr": "Le schéma comporte {n} étapes : {chain}. Juste après « {x} » vient « {y} ».",
        "de": "Das Diagramm hat {n} Stufen: {chain}. Direkt auf „{x}“ folgt „{y}“.",
        "es": "El diagrama tiene {n} etapas: {chain}. Justo después de «{x}» viene «{y}».",
        "ru": "Этапы схемы ({n}): {chain}. Сразу после «{x}» идёт «{y}».",
        "ja": "この図には{n}つの段階があります：{chain}。「{x}」の直後は「{y}」です。",
    },
    "circ_q": {
        "en": "The resistors in this circuit are connected in series. What current flows through the circuit?",
        "zh": "电路中的电阻为串联。电路中的电流是多少？",
        "fr": "Les résistances de ce circuit sont montées en série. Quelle intensité traverse le circuit ?",
        "de": "Die Widerstände in dieser Schaltung sind in Reihe geschaltet. Welcher Strom fließt im Stromkreis?",
        "es": "Las resistencias de este circuito están en serie. ¿Qué corriente circula por el circuito?",
        "ru": "Резисторы в этой цепи соединены последовательно. Какой ток течёт в цепи?",
        "ja": "この回路の抵抗は直列に接続されています。回路に流れる電流はいくつですか？",
    },
    "circ_a": {
        "en": "The total resistance is {sum} = {R} Ω, so by Ohm's law I = V / R = {V} V / {R} Ω = {I} A.",
        "zh": "总电阻为{sum} = {R} Ω，由欧姆定律得 I = V / R = {V} V / {R} Ω = {I} A。",
        "fr": "La résistance totale vaut {sum} = {R} Ω ; d'après la loi d'Ohm, I = U / R = {V} V / {R} Ω = {I} A.",
        "de": "Der Gesamtwiderstand beträgt {sum} = {R} Ω, nach dem ohmschen Gesetz ist I = U / R = {V} V / {R} Ω = {I} A.",
        "es": "La resistencia total es {sum} = {R} Ω, así que por la ley de Ohm I = V / R = {V} V / {R} Ω = {I} A.",
        "ru": "Общее сопротивление {sum} = {R} Ом, по закону Ома I = U / R = {V} В / {R} Ом = {I} А.",
        "ja": "合成抵抗は{sum} = {R} Ωなので、オームの法則よりI = V / R = {V} V / {R} Ω = {I} Aです。",
    },
    "mol_q": {
        "en": "Which molecule is shown in this structure sketch? Give its name and chemical formula.",
        "zh": "这个结构示意图表示的是哪种分子？请给出名称和化学式。",
        "fr": "Quelle molécule est représentée sur ce schéma ? Donne son nom et sa formule chimique.",
        "de": "Welches Molekül zeigt diese Strukturskizze? Nenne Namen und Summenformel.",
        "es": "¿Qué molécula se muestra en este esquema? Indica su nombre y su fórmula química.",
        "ru": "Какая молекула изображена на схеме? Назови её и приведи химическую формулу.",
        "ja": "この構造図はどの分子を表していますか？名称と化学式を答えてください。",
    },
    "mol_a": {
        "en": "It is {name}, chemical formula {formula}: {atoms} atoms joined by {bonds} bonds.",
        "zh": "这是{name}，化学式为{formula}，由{atoms}个原子通过{bonds}个化学键相连。",
        "fr": "Molécule représentée : {name}, de formule {formula} ({atoms} atomes reliés par {bonds} liaisons).",
        "de": "Dargestellt ist {name} mit der Summenformel {formula} ({atoms} Atome, {bonds} Bindungen).",
        "es": "Se trata de {name}, de fórmula química {formula} ({atoms} átomos unidos por {bonds} enlaces).",
        "ru": "Это {name}, химическая формула {formula} (атомов: {atoms}, связей: {bonds}).",
        "ja": "これは{name}で、化学式は{formula}です（原子{atoms}個、結合{bonds}本）。",
    },
    # grounding and video
    "ground_q": {
        "en": "Locate {obj} in the image and give its bounding box as [x1, y1, x2, y2] (coordinates scaled to 0-1000).",
        "zh": "请定位图中的{obj}，并以[x1, y1, x2, y2]格式给出其边界框（坐标归一化到0-1000）。",
        "fr": "Localise {obj} dans l'image et donne sa boîte englobante au format [x1, y1, x2, y2] "
              "(coordonnées normalisées entre 0 et 1000).",
        "de": "Wo im Bild befindet sich {obj}? Gib die Bounding Box im Format [x1, y1, x2, y2] an "
              "(Koordinaten auf 0–1000 normiert).",
        "es": "Localiza {obj} en la imagen y da su caja delimitadora en formato [x1, y1, x2, y2] "
              "(coordenadas normalizadas a 0-1000).",
        "ru": "Где на изображении находится {obj}? Укажи ограничивающую рамку в формате [x1, y1, x2, y2] "
              "(координаты нормированы от 0 до 1000).",
        "ja": "画像内の{obj}の位置を、[x1, y1, x2, y2]形式のバウンディングボックス（0〜1000に正規化した座標）で答えてください。",
    },
    "ground_a": {
        "en": "{Obj} is at {box}.",
        "zh": "{obj}的位置是{box}。",
        "fr": "{Obj} se trouve en {box}.",
        "de": "{Obj} befindet sich bei {box}.",
        "es": "{Obj} está en {box}.",
        "ru": "{Obj} находится в области {box}.",
        "ja": "{obj}は{box}にあります。",
    },
    "detect_q": {
        "en": "Detect every shape in the image. Answer in JSON with the label and bbox_2d (0-1000) of each.",
        "zh": "检测图中的所有图形，以JSON格式输出每个图形的标签和bbox_2d（坐标归一化到0-1000）。",
        "fr": "Détecte toutes les formes de l'image. Réponds en JSON avec le libellé et la bbox_2d (0-1000) de chacune.",
        "de": "Erkenne alle Formen im Bild. Antworte als JSON mit Bezeichnung und bbox_2d (0–1000) für jede Form.",
        "es": "Detecta todas las formas de la imagen. Responde en JSON con la etiqueta y la bbox_2d (0-1000) de cada una.",
        "ru": "Найди все фигуры на изображении. Ответь в формате JSON: метка и bbox_2d (0–1000) для каждой.",
        "ja": "画像内のすべての図形を検出し、それぞれのラベルとbbox_2d（0〜1000）をJSONで答えてください。",
    },
    "count_q": {
        "en": "How many shapes are in the image? List them from left to right.",
        "zh": "图中有几个图形？请从左到右列出。",
        "fr": "Combien de formes y a-t-il dans l'image ? Énumère-les de gauche à droite.",
        "de": "Wie viele Formen sind im Bild? Zähle sie von links nach rechts auf.",
        "es": "¿Cuántas formas hay en la imagen? Enuméralas de izquierda a derecha.",
        "ru": "Сколько фигур на изображении? Перечисли их слева направо.",
        "ja": "画像には図形がいくつありますか？左から順に挙げてください。",
    },
    "count_a": {
        "en": "There are {n} shapes. From left to right: {items}.",
        "zh": "图中共有{n}个图形，从左到右依次是：{items}。",
        "fr": "Il y a {n} formes. De gauche à droite : {items}.",
        "de": "Es sind {n} Formen. Von links nach rechts: {items}.",
        "es": "Hay {n} formas. De izquierda a derecha: {items}.",
        "ru": "Всего фигур: {n}. Слева направо: {items}.",
        "ja": "図形は{n}個あります。左から順に：{items}。",
    },
    "video_q": {
        "en": "Describe how {obj} moves in this video.",
        "zh": "请描述视频中{obj}是如何运动的。",
        "fr": "Décris comment {obj} se déplace dans cette vidéo.",
        "de": "Beschreibe, wie sich {obj} in diesem Video bewegt.",
        "es": "Describe cómo se mueve {obj} en este vídeo.",
        "ru": "Опиши, как {obj} движется в этом видео.",
        "ja": "この動画の中で{obj}がどのように動くか説明してください。",
    },
    "move_right": {
        "en": "{Obj} moves from the left side to the right side of the frame.",
        "zh": "{obj}从画面左侧移动到右侧。",
        "fr": "{Obj} se déplace de la gauche vers la droite de l'image.",
        "de": "{Obj} bewegt sich von der linken zur rechten Bildseite.",
        "es": "{Obj} se desplaza de la izquierda a la derecha de la imagen.",
        "ru": "{Obj} перемещается из левой части кадра в правую.",
        "ja": "{obj}は画面の左側から右側へ移動します。",
    },
    "move_left": {
        "en": "{Obj} moves from the right side to the left side of the frame.",
        "zh": "{obj}从画面右侧移动到左侧。",
        "fr": "{Obj} se déplace de la droite vers la gauche de l'image.",
        "de": "{Obj} bewegt sich von der rechten zur linken Bildseite.",
        "es": "{Obj} se desplaza de la derecha a la izquierda de la imagen.",
        "ru": "{Obj} перемещается из правой части кадра в левую.",
        "ja": "{obj}は画面の右側から左側へ移動します。",
    },
    "move_down": {
        "en": "{Obj} moves from the top of the frame to the bottom.",
        "zh": "{obj}从画面上方移动到下方。",
        "fr": "{Obj} descend du haut vers le bas de l'image.",
        "de": "{Obj} bewegt sich vom oberen zum unteren Bildrand.",
        "es": "{Obj} baja desde la parte superior hasta la parte inferior de la imagen.",
        "ru": "{Obj} перемещается из верхней части кадра в нижнюю.",
        "ja": "{obj}は画面の上から下へ移動します。",
    },
    "move_up": {
        "en": "{Obj} moves from the bottom of the frame to the top.",
        "zh": "{obj}从画面下方移动到上方。",
        "fr": "{Obj} monte du bas vers le haut de l'image.",
        "de": "{Obj} bewegt sich vom unteren zum oberen Bildrand.",
        "es": "{Obj} sube desde la parte inferior hasta la parte superior de la imagen.",
        "ru": "{Obj} перемещается из нижней части кадра в верхнюю.",
        "ja": "{obj}は画面の下から上へ移動します。",
    },
    "move_grow": {
        "en": "{Obj} stays in place and grows larger in every frame.",
        "zh": "{obj}位置不变，并且逐帧变大。",
        "fr": "{Obj} reste sur place et grossit à chaque image.",
        "de": "{Obj} bleibt an derselben Stelle und wird von Bild zu Bild größer.",
        "es": "{Obj} permanece en su sitio y se hace más grande en cada fotograma.",
        "ru": "{Obj} остаётся на месте и с каждым кадром становится больше.",
        "ja": "{obj}は位置が変わらず、フレームごとに大きくなります。",
    },
    "move_shrink": {
        "en": "{Obj} stays in place and gets smaller in every frame.",
        "zh": "{obj}位置不变，并且逐帧变小。",
        "fr": "{Obj} reste sur place et rapetisse à chaque image.",
        "de": "{Obj} bleibt an derselben Stelle und wird von Bild zu Bild kleiner.",
        "es": "{Obj} permanece en su sitio y se hace más pequeño en cada fotograma.",
        "ru": "{Obj} остаётся на месте и с каждым кадром становится меньше.",
        "ja": "{obj}は位置が変わらず、フレームごとに小さくなります。",
    },
    # text-only dialogues
    "system": {
        "en": "You are a helpful, concise assistant.",
        "zh": "你是一个乐于助人、回答简洁的助手。",
        "fr": "Tu es un assistant serviable et concis.",
        "de": "Du bist ein hilfsbereiter, präziser Assistent.",
        "es": "Eres un asistente útil y conciso.",
        "ru": "Ты полезный и лаконичный ассистент.",
        "ja": "あなたは親切で簡潔なアシスタントです。",
    },
    "conv_q1": {
        "en": "How many miles is {km} km?", "zh": "{km}公里是多少英里？", "fr": "Combien de miles font {km} km ?",
        "de": "Wie viele Meilen sind {km} km?", "es": "¿Cuántas millas son {km} km?",
        "ru": "Сколько миль в {km} км?", "ja": "{km}キロメートルは何マイルですか？",
    },
    "conv_a1": {
        "en": "{km} km is about {mi} miles (1 mile = 1.609 km).",
        "zh": "{km}公里约等于{mi}英里（1英里 = 1.609公里）。",
        "fr": "{km} km font environ {mi} miles (1 mile = 1,609 km).",
        "de": "{km} km sind etwa {mi} Meilen (1 Meile = 1,609 km).",
        "es": "{km} km son unas {mi} millas (1 milla = 1,609 km).",
        "ru": "{km} км — это примерно {mi} мили (1 миля = 1,609 км).",
        "ja": "{km}キロメートルは約{mi}マイルです（1マイル = 1.609キロメートル）。",
    },
    "conv_q2": {
        "en": "And how many metres is that?", "zh": "那是多少米？", "fr": "Et cela fait combien de mètres ?",
        "de": "Und wie viele Meter sind das?", "es": "¿Y cuántos metros son?", "ru": "А сколько это в метрах?",
        "ja": "それは何メートルですか？",
    },
    "conv_a2": {
        "en": "{km} km is {m} metres.", "zh": "{km}公里等于{m}米。", "fr": "{km} km font {m} mètres.",
        "de": "{km} km sind {m} Meter.", "es": "{km} km son {m} metros.", "ru": "{km} км — это {m} метров.",
        "ja": "{km}キロメートルは{m}メートルです。",
    },
    "conv_q3": {
        "en": "One more: what is {c} °C in Fahrenheit?", "zh": "再问一个：{c}°C是多少华氏度？",
        "fr": "Encore une question : combien font {c} °C en Fahrenheit ?",
        "de": "Noch eine Frage: Wie viel sind {c} °C in Fahrenheit?",
        "es": "Una más: ¿cuánto son {c} °C en Fahrenheit?", "ru": "И ещё: сколько будет {c} °C по Фаренгейту?",
        "ja": "もう一つ：{c}°Cは華氏何度ですか？",
    },
    "conv_a3": {
        "en": "{c} °C = {f} °F, because F = C × 9/5 + 32.", "zh": "{c}°C = {f}°F，因为 F = C × 9/5 + 32。",
        "fr": "{c} °C = {f} °F, car F = C × 9/5 + 32.", "de": "{c} °C = {f} °F, denn F = C × 9/5 + 32.",
        "es": "{c} °C = {f} °F, ya que F = C × 9/5 + 32.", "ru": "{c} °C = {f} °F, поскольку F = C × 9/5 + 32.",
        "ja": "{c}°C = {f}°Fです（F = C × 9/5 + 32）。",
    },
    "rec_q1": {
        "en": "A pancake recipe for {n1} people needs {flour} g of flour, {milk} ml of milk and {eggs} eggs. "
              "How much do I need for {n2} people?",
        "zh": "一份{n1}人份的松饼配方需要{flour}克面粉、{milk}毫升牛奶和{eggs}个鸡蛋。做{n2}人份需要多少？",
        "fr": "Une recette de crêpes pour {n1} personnes demande {flour} g de farine, {milk} ml de lait et "
              "{eggs} œufs. Combien m'en faut-il pour {n2} personnes ?",
        "de": "Ein Pfannkuchenrezept für {n1} Personen braucht {flour} g Mehl, {milk} ml Milch und {eggs} Eier. "
              "Wie viel brauche ich für {n2} Personen?",
        "es": "Una receta de tortitas para {n1} personas lleva {flour} g de harina, {milk} ml de leche y "
              "{eggs} huevos. ¿Cuánto necesito para {n2} personas?",
        "ru": "Рецепт блинов рассчитан на {n1} чел.: мука — {flour} г, молоко — {milk} мл, яйца — {eggs} шт. "
              "Сколько нужно на {n2} чел.?",
        "ja": "{n1}人分のパンケーキのレシピには、小麦粉{flour}g、牛乳{milk}ml、卵{eggs}個が必要です。"
              "{n2}人分ではどれだけ必要ですか？",
    },
    "rec_a1": {
        "en": "Multiply everything by {n2}/{n1}: {flour2} g of flour, {milk2} ml of milk and {eggs2} eggs.",
        "zh": "所有用量乘以{n2}/{n1}：{flour2}克面粉、{milk2}毫升牛奶和{eggs2}个鸡蛋。",
        "fr": "Multiplie toutes les quantités par {n2}/{n1} : {flour2} g de farine, {milk2} ml de lait et {eggs2} œufs.",
        "de": "Multipliziere alle Mengen mit {n2}/{n1}: {flour2} g Mehl, {milk2} ml Milch und {eggs2} Eier.",
        "es": "Multiplica todas las cantidades por {n2}/{n1}: {flour2} g de harina, {milk2} ml de leche y {eggs2} huevos.",
        "ru": "Умножьте всё на {n2}/{n1}: мука — {flour2} г, молоко — {milk2} мл, яйца — {eggs2} шт.",
        "ja": "すべての分量を{n2}/{n1}倍にします：小麦粉{flour2}g、牛乳{milk2}ml、卵{eggs2}個です。",
    },
    "rec_q2": {
        "en": "Can I replace the milk with something else?", "zh": "牛奶可以用别的东西代替吗？",
        "fr": "Je peux remplacer le lait ?", "de": "Kann ich die Milch ersetzen?",
        "es": "¿Puedo sustituir la leche?", "ru": "Можно ли заменить молоко?", "ja": "牛乳は別のものに替えられますか？",
    },
    "rec_a2": {
        "en": "Yes. Use the same amount of oat or soy milk, or water with a spoonful of melted butter; the "
              "pancakes will be slightly less rich.",
        "zh": "可以：用等量的燕麦奶或豆奶，或者用水加一勺融化的黄油；松饼的口感会稍微清淡一些。",
        "fr": "Oui : utilise la même quantité de lait d'avoine ou de soja, ou de l'eau avec une cuillère de "
              "beurre fondu ; les crêpes seront un peu moins riches.",
        "de": "Ja: Nimm die gleiche Menge Hafer- oder Sojamilch oder Wasser mit einem Löffel geschmolzener "
              "Butter; die Pfannkuchen werden etwas weniger gehaltvoll.",
        "es": "Sí: usa la misma cantidad de bebida de avena o de soja, o agua con una cucharada de mantequilla "
              "derretida; las tortitas quedarán un poco menos sabrosas.",
        "ru": "Да: возьмите столько же овсяного или соевого молока либо воду с ложкой растопленного "
              "сливочного масла; блины получатся чуть менее сытными.",
        "ja": "はい。同量のオーツミルクや豆乳、または溶かしバターを大さじ1杯加えた水で代用できます。少しあっさりした仕上がりになります。",
    },
    "tr_q1": {
        "en": "Translate into {target}: \"{text}\"", "zh": "请把这句话翻译成{target}：“{text}”",
        "fr": "Traduis en {target} : « {text} »", "de": "Übersetze ins {target}: „{text}“",
        "es": "Traduce al {target}: «{text}»", "ru": "Переведи на {target}: «{text}»",
        "ja": "「{text}」を{target}に翻訳してください。",
    },
    "tr_q2": {
        "en": "And into {target}?", "zh": "那翻译成{target}呢？", "fr": "Et en {target} ?", "de": "Und ins {target}?",
        "es": "¿Y al {target}?", "ru": "А на {target}?", "ja": "では{target}では？",
    },
    # text-only reasoning, maths and code
    "train_q": {
        "en": "A train covers {d} km in {t} hours. At the same speed, how long will it take to cover {d2} km?",
        "zh": "一列火车{t}小时行驶{d}公里。以同样的速度，行驶{d2}公里需要多长时间？",
        "fr": "Un train parcourt {d} km en {t} heures. À la même vitesse, combien de temps lui faut-il pour parcourir {d2} km ?",
        "de": "Ein Zug legt {d} km in {t} Stunden zurück. Wie lange braucht er bei gleicher Geschwindigkeit für {d2} km?",
        "es": "Un tren recorre {d} km en {t} horas. A la misma velocidad, ¿cuánto tardará en recorrer {d2} km?",
        "ru": "Поезд проходит {d} км за {t} ч. Сколько времени ему понадобится на {d2} км при той же скорости?",
        "ja": "列車が{d}kmを{t}時間で走ります。同じ速さで{d2}km走るには何時間かかりますか？",
    },
    "train_a": {
        "en": "The speed is {d} / {t} = {v} km/h, so {d2} km takes {d2} / {v} = {t2} hours.",
        "zh": "速度为{d} ÷ {t} = {v}公里/小时，所以{d2}公里需要{d2} ÷ {v} = {t2}小时。",
        "fr": "La vitesse est de {d} / {t} = {v} km/h, donc {d2} km prennent {d2} / {v} = {t2} heures.",
        "de": "Die Geschwindigkeit beträgt {d} / {t} = {v} km/h, also dauern {d2} km {d2} / {v} = {t2} Stunden.",
        "es": "La velocidad es {d} / {t} = {v} km/h, así que {d2} km llevan {d2} / {v} = {t2} horas.",
        "ru": "Скорость равна {d} / {t} = {v} км/ч, значит, на {d2} км уйдёт {d2} / {v} = {t2} ч.",
        "ja": "速さは{d} ÷ {t} = 時速{v}kmなので、{d2}kmには{d2} ÷ {v} = {t2}時間かかります。",
    },
    "disc_q": {
        "en": "A jacket costs {p} €. It is reduced by {r1}%, and the reduced price is cut by another {r2}% at "
              "the checkout. What is the final price?",
        "zh": "一件夹克原价{p}欧元，先降价{r1}%，结账时在降价后的价格上再减{r2}%。最终价格是多少？",
        "fr": "Une veste coûte {p} €. Son prix baisse de {r1} %, puis le prix réduit baisse encore de {r2} % en "
              "caisse. Quel est le prix final ?",
        "de": "Eine Jacke kostet {p} €. Sie wird um {r1} % reduziert, und an der Kasse gibt es auf den "
              "reduzierten Preis noch einmal {r2} % Rabatt. Wie hoch ist der Endpreis?",
        "es": "Una chaqueta cuesta {p} €. Tiene un descuento del {r1} % y, en caja, el precio rebajado baja "
              "otro {r2} %. ¿Cuál es el precio final?",
        "ru": "Куртка стоит {p} €. Её цену снизили на {r1} %, а на кассе сниженная цена уменьшилась ещё на "
              "{r2} %. Какова итоговая цена?",
        "ja": "ジャケットの価格は{p}ユーロです。{r1}%値下げされ、さらにレジで値下げ後の価格から{r2}%引かれます。最終的な価格はいくらですか？",
    },
    "disc_a": {
        "en": "After {r1}%: {p} × {f1} = {p1} €. After another {r2}%: {p1} × {f2} = {p2} €. The final price "
              "is {p2} €, a total discount of {tot}%, not {naive}%.",
        "zh": "降价{r1}%后：{p} × {f1} = {p1}欧元；再减{r2}%：{p1} × {f2} = {p2}欧元。最终价格为{p2}欧元，"
              "总折扣为{tot}%，而不是{naive}%。",
        "fr": "Après {r1} % : {p} × {f1} = {p1} €. Après {r2} % de plus : {p1} × {f2} = {p2} €. Le prix final "
              "est de {p2} €, soit une remise totale de {tot} % et non de {naive} %.",
        "de": "Nach {r1} %: {p} × {f1} = {p1} €. Nach weiteren {r2} %: {p1} × {f2} = {p2} €. Der Endpreis "
              "beträgt {p2} €, insgesamt also {tot} % Rabatt, nicht {naive} %.",
        "es": "Tras el {r1} %: {p} × {f1} = {p1} €. Tras otro {r2} %: {p1} × {f2} = {p2} €. El precio final "
              "es {p2} €, un descuento total del {tot} %, no del {naive} %.",
        "ru": "После снижения на {r1} %: {p} × {f1} = {p1} €. После ещё {r2} %: {p1} × {f2} = {p2} €. "
              "Итоговая цена — {p2} €, общая скидка {tot} %, а не {naive} %.",
        "ja": "{r1}%引き後：{p} × {f1} = {p1}ユーロ。さらに{r2}%引き後：{p1} × {f2} = {p2}ユーロ。"
              "最終価格は{p2}ユーロで、合計の割引率は{naive}%ではなく{tot}%です。",
    },
    "eq_q": {
        "en": "Solve for x: {a}x + {b} = {c}.", "zh": "解方程：{a}x + {b} = {c}。",
        "fr": "Résous l'équation : {a}x + {b} = {c}.", "de": "Löse die Gleichung: {a}x + {b} = {c}.",
        "es": "Resuelve la ecuación: {a}x + {b} = {c}.", "ru": "Реши уравнение: {a}x + {b} = {c}.",
        "ja": "方程式{a}x + {b} = {c}を解いてください。",
    },
    "eq_a": {
        "en": "Subtract {b} from both sides: {a}x = {cb}. Divide by {a}: x = {x}. Check: {a} × {x} + {b} = {c}.",
        "zh": "两边同时减去{b}：{a}x = {cb}。两边除以{a}：x = {x}。验算：{a} × {x} + {b} = {c}。",
        "fr": "On soustrait {b} des deux côtés : {a}x = {cb}. On divise par {a} : x = {x}. "
              "Vérification : {a} × {x} + {b} = {c}.",
        "de": "Auf beiden Seiten {b} abziehen: {a}x = {cb}. Durch {a} teilen: x = {x}. Probe: {a} × {x} + {b} = {c}.",
        "es": "Restamos {b} en ambos lados: {a}x = {cb}. Dividimos entre {a}: x = {x}. "
              "Comprobación: {a} × {x} + {b} = {c}.",
        "ru": "Вычтем {b} из обеих частей: {a}x = {cb}. Разделим на {a}: x = {x}. Проверка: {a} × {x} + {b} = {c}.",
        "ja": "両辺から{b}を引くと{a}x = {cb}。両辺を{a}で割るとx = {x}。検算：{a} × {x} + {b} = {c}。",
    },
    "code_q": {
        "en": "Write a Python function `{name}` that {desc}.", "zh": "请写一个Python函数`{name}`，{desc}。",
        "fr": "Écris une fonction Python `{name}` qui {desc}.", "de": "Schreibe eine Python-Funktion `{name}`, die {desc}.",
        "es": "Escribe una función de Python `{name}` que {desc}.", "ru": "Напиши функцию на Python `{name}`, которая {desc}.",
        "ja": "{desc}Python関数`{name}`を書いてください。",
    },
    "code_a": {
        "en": "Here is an implementation:\n\n```python\n{code}\n```\n\nIt runs in linear time in the size of the input.",
        "zh": "下面是一种实现：\n\n```python\n{code}\n```\n\n时间复杂度与输入规模成线性关系。",
        "fr": "Voici une implémentation :\n\n```python\n{code}\n```\n\nElle s'exécute en temps linéaire par rapport à la taille de l'entrée.",
        "de": "Hier ist eine Implementierung:\n\n```python\n{code}\n```\n\nDie Laufzeit ist linear in der Größe der Eingabe.",
        "es": "Aquí tienes una implementación:\n\n```python\n{code}\n```\n\nSe ejecuta en tiempo lineal respecto al tamaño de la entrada.",
        "ru": "Вот реализация:\n\n```python\n{code}\n```\n\nВремя работы линейно зависит от размера входных данных.",
        "ja": "実装例は次のとおりです：\n\n```python\n{code}\n```\n\n入力の大きさに対して線形時間で動作します。",
    },
    "out_q": {
        "en": "What does this Python code print?", "zh": "这段Python代码会输出什么？",
        "fr": "Qu'affiche ce code Python ?", "de": "Was gibt dieser Python-Code aus?",
        "es": "¿Qué imprime este código de Python?", "ru": "Что выведет этот код на Python?",
        "ja": "このPythonコードは何を出力しますか？",
    },
    "out_a": {
        "en": "It prints {total}: the loop adds the multiples of {k} from {a} to {b1}, namely {terms}.",
        "zh": "输出{total}：循环把{a}到{b1}之间{k}的倍数相加，即{terms}。",
        "fr": "Il affiche {total} : la boucle additionne les multiples de {k} entre {a} et {b1}, soit {terms}.",
        "de": "Er gibt {total} aus: Die Schleife addiert die Vielfachen von {k} zwischen {a} und {b1}, also {terms}.",
        "es": "Imprime {total}: el bucle suma los múltiplos de {k} entre {a} y {b1}, es decir, {terms}.",
        "ru": "Код выведет {total}: цикл складывает числа, кратные {k}, от {a} до {b1}: {terms}.",
        "ja": "{total}と出力されます。ループは{a}から{b1}までの{k}の倍数、つまり{terms}を足し合わせます。",
    },
    "sql_q": {
        "en": "Table orders(customer_id, amount) holds one row per order. Write an SQL query that returns the "
              "{n} customers with the highest total amount, largest first.",
        "zh": "表orders(customer_id, amount)每行是一笔订单。写一个SQL查询，返回订单总金额最高的{n}位客户，按金额从高到低排列。",
        "fr": "La table orders(customer_id, amount) contient une ligne par commande. Écris une requête SQL qui "
              "renvoie les {n} clients dont le montant total est le plus élevé, du plus grand au plus petit.",
        "de": "Die Tabelle orders(customer_id, amount) enthält eine Zeile pro Bestellung. Schreibe eine "
              "SQL-Abfrage, die die {n} Kunden mit der höchsten Gesamtsumme liefert, absteigend sortiert.",
        "es": "La tabla orders(customer_id, amount) tiene una fila por pedido. Escribe una consulta SQL que "
              "devuelva los {n} clientes con el mayor importe total, de mayor a menor.",
        "ru": "Таблица orders(customer_id, amount) содержит по строке на каждый заказ. Напиши SQL-запрос, "
              "который возвращает {n} клиентов с наибольшей общей суммой заказов по убыванию.",
        "ja": "テーブルorders(customer_id, amount)には注文ごとに1行があります。合計金額が最も大きい顧客上位{n}人を、"
              "金額の大きい順に返すSQLクエリを書いてください。",
    },
    "sql_a": {
        "en": "Group by customer, sum the amounts, sort descending and keep the first {n} rows:",
        "zh": "按客户分组求和，降序排序后取前{n}行：",
        "fr": "On regroupe par client, on additionne les montants, on trie par ordre décroissant et on garde "
              "les {n} premières lignes :",
        "de": "Nach Kunde gruppieren, Beträge summieren, absteigend sortieren und die ersten {n} Zeilen behalten:",
        "es": "Agrupa por cliente, suma los importes, ordena de mayor a menor y quédate con las {n} primeras filas:",
        "ru": "Сгруппируем по клиенту, просуммируем суммы, отсортируем по убыванию и оставим первые {n} строк:",
        "ja": "顧客ごとにグループ化して金額を合計し、降順に並べて上位{n}行を取り出します：",
    },
}

R: dict[str, dict[str, str]] = {
    "bar_max": {
        "en": "Reading the bars: {listing}. The largest is {label} at {value}; the smallest is {min_label} at {min_value}.",
        "zh": "逐个读取柱子的数值：{listing}。最大的是{label}（{value}），最小的是{min_label}（{min_value}）。",
    },
    "bar_read": {
        "en": "Going through the bars from left to right: {listing}. Adding them gives {total}.",
        "zh": "从左到右读取每个柱子：{listing}。相加得到{total}。",
    },
    "line": {
        "en": "The points from left to right are {listing}. The first is {first} and the last is {last}; the "
              "maximum {max} is at {xmax} and the minimum {min} at {xmin}.",
        "zh": "从左到右各点为：{listing}。第一个是{first}，最后一个是{last}；最大值{max}在{xmax}，最小值{min}在{xmin}。",
    },
    "pie": {
        "en": "The segment labels read {listing}; together they make 100%.",
        "zh": "各扇区标注为：{listing}；合计100%。",
    },
    "multi": {
        "en": "Picture 1: {l1}, sum {t1}. Picture 2: {l2}, sum {t2}. Difference: {d}.",
        "zh": "图1：{l1}，合计{t1}。图2：{l2}，合计{t2}。差值为{d}。",
    },
    "table_lookup": {
        "en": "The table has the columns {cols}. Row \"{row}\" and column \"{col}\" meet at the cell {value}.",
        "zh": "表格的列为{cols}。“{row}”这一行与“{col}”这一列交叉处的数值是{value}。",
    },
    "table_md": {
        "en": "The table has {n} data rows and the columns {cols}. I copy the header, a separator line and every "
              "row in order.",
        "zh": "表格有{n}行数据，列为{cols}。依次写出表头、分隔行和每一行。",
    },
    "table_max": {
        "en": "Column \"{col}\": {listing}. The largest is {value}, in row \"{row}\".",
        "zh": "“{col}”列：{listing}。最大值是{value}，位于“{row}”行。",
    },
    "tri": {
        "en": "This is a right triangle with legs {a} and {b}; x is the hypotenuse. {a}² + {b}² = {a2} + {b2} "
              "= {s}, and √{s} = {c}.",
        "zh": "这是直角三角形，两条直角边为{a}和{b}，x是斜边。{a}² + {b}² = {a2} + {b2} = {s}，√{s} = {c}。",
    },
    "rect": {
        "en": "The sides are {w} cm and {h} cm. Area is the product, {area}; perimeter is twice the sum, {per}.",
        "zh": "两边分别为{w} cm和{h} cm。面积是乘积{area}；周长是和的两倍{per}。",
    },
    "lin": {
        "en": "At x = 0 the line is at y = {c}; at x = 1 it is at y = {c1}. Rise over run: {c1} - {c} = {m}.",
        "zh": "x = 0时y = {c}；x = 1时y = {c1}。斜率 = {c1} - {c} = {m}。",
    },
    "quad": {
        "en": "The turning point of the curve is at x = {p}, y = {q}. The arms point {dir}, so the leading "
              "coefficient is {sign}.",
        "zh": "曲线的转折点在x = {p}，y = {q}处。两侧向{dir}延伸，所以二次项系数为{sign}。",
    },
    "block": {
        "en": "Following the arrows from the top: {chain}. \"{x}\" is step {k}, so the next step is \"{y}\".",
        "zh": "沿箭头从上往下：{chain}。“{x}”是第{k}步，所以下一步是“{y}”。",
    },
    "circ": {
        "en": "Series resistances add: {sum} = {R} Ω. The source gives {V} V, and I = V / R = {I} A.",
        "zh": "串联电阻相加：{sum} = {R} Ω。电源电压为{V} V，I = V / R = {I} A。",
    },
    "mol": {
        "en": "I count the atoms: {counts}. That is {name}, {formula}.",
        "zh": "数一数原子：{counts}。这是{name}，{formula}。",
    },
    "ground": {
        "en": "The image is {W}×{H} px. {Obj} spans x {x1}-{x2} and y {y1}-{y2} px; scaled to 0-1000 that is {box}.",
        "zh": "图像大小为{W}×{H}像素。{obj}的x范围为{x1}-{x2}，y范围为{y1}-{y2}像素；换算到0-1000为{box}。",
    },
    "detect": {
        "en": "I see {n} shapes: {items}. Each box is converted to the 0-1000 scale.",
        "zh": "图中有{n}个图形：{items}。每个框都换算到0-1000坐标。",
    },
    "count": {
        "en": "Scanning from left to right: {items}. That makes {n}.",
        "zh": "从左到右扫描：{items}。共{n}个。",
    },
    "train": {
        "en": "Speed first: {d} km in {t} h is {v} km/h. Then time = distance / speed = {d2} / {v} = {t2}. "
              "Check: {v} × {t2} = {d2}.",
        "zh": "先求速度：{t}小时{d}公里，即每小时{v}公里。时间 = 路程 ÷ 速度 = {d2} ÷ {v} = {t2}。验算：{v} × {t2} = {d2}。",
    },
    "disc": {
        "en": "Successive discounts multiply: {f1} × {f2} = {f}. So the price is {p} × {f} = {p2}; the combined "
              "reduction is {tot}%, not {r1} + {r2} = {naive}%.",
        "zh": "连续折扣应相乘：{f1} × {f2} = {f}。所以价格为{p} × {f} = {p2}；总降幅为{tot}%，而不是{r1} + {r2} = {naive}%。",
    },
    "eq": {
        "en": "Isolate x: {c} - {b} = {cb}, then {cb} / {a} = {x}.",
        "zh": "移项：{c} - {b} = {cb}，再除以{a}：{cb} ÷ {a} = {x}。",
    },
    "code": {
        "en": "I need a function {name}. Plan: {plan}. It should also work for empty input.",
        "zh": "需要实现函数{name}。思路：{plan}。空输入也要能正常处理。",
    },
    "out": {
        "en": "range({a}, {b}) runs from {a} to {b1}. Multiples of {k} there: {terms}. Sum: {total}.",
        "zh": "range({a}, {b})取{a}到{b1}。其中{k}的倍数：{terms}。求和得{total}。",
    },
    "sql": {
        "en": "A total per customer needs GROUP BY customer_id with SUM(amount); then ORDER BY that sum "
              "descending and LIMIT {n}.",
        "zh": "每位客户的总额需要GROUP BY customer_id并SUM(amount)；再按总额降序ORDER BY，并LIMIT {n}。",
    },
}

LINE_TRENDS = {  # shape -> phrase per language
    "rise": {"en": "goes up", "zh": "呈上升趋势", "fr": "augmente", "de": "steigt", "es": "sube",
             "ru": "растёт", "ja": "増加しています"},
    "fall": {"en": "goes down", "zh": "呈下降趋势", "fr": "diminue", "de": "fällt", "es": "baja",
             "ru": "снижается", "ja": "減少しています"},
    "peak": {"en": "rises to a peak and then declines", "zh": "先升后降", "fr": "augmente puis diminue",
             "de": "steigt zunächst und fällt dann", "es": "sube y luego baja",
             "ru": "сначала растёт, а затем снижается", "ja": "増加した後に減少しています"},
    "dip": {"en": "drops to a low point and then recovers", "zh": "先降后升", "fr": "baisse puis remonte",
            "de": "fällt zunächst und steigt dann wieder", "es": "baja y luego se recupera",
            "ru": "сначала снижается, а затем восстанавливается", "ja": "減少した後に回復しています"},
}

COLORS = {  # name -> RGB
    "red": (220, 50, 47), "blue": (38, 110, 210), "green": (60, 160, 70),
    "yellow": (240, 200, 40), "purple": (140, 70, 180), "orange": (245, 140, 30),
}
COLOR_WORDS = {
    "en": {"red": "red", "blue": "blue", "green": "green", "yellow": "yellow", "purple": "purple", "orange": "orange"},
    "zh": {"red": "红色", "blue": "蓝色", "green": "绿色", "yellow": "黄色", "purple": "紫色", "orange": "橙色"},
    "fr": {"red": "rouge", "blue": "bleu", "green": "vert", "yellow": "jaune", "purple": "violet", "orange": "orange"},
    "de": {"red": "rot", "blue": "blau", "green": "grün", "yellow": "gelb", "purple": "violett", "orange": "orangefarben"},
    "es": {"red": "rojo", "blue": "azul", "green": "verde", "yellow": "amarillo", "purple": "morado", "orange": "naranja"},
    "ru": {"red": "красный", "blue": "синий", "green": "зелёный", "yellow": "жёлтый", "purple": "фиолетовый",
           "orange": "оранжевый"},
    "ja": {"red": "赤い", "blue": "青い", "green": "緑の", "yellow": "黄色い", "purple": "紫の", "orange": "オレンジ色の"},
}
SHAPES = ("circle", "square", "triangle", "diamond", "hexagon")
SHAPE_WORDS = {
    "en": {"circle": "circle", "square": "square", "triangle": "triangle", "diamond": "diamond", "hexagon": "hexagon"},
    "zh": {"circle": "圆形", "square": "正方形", "triangle": "三角形", "diamond": "菱形", "hexagon": "六边形"},
    "fr": {"circle": "cercle", "square": "carré", "triangle": "triangle", "diamond": "losange", "hexagon": "hexagone"},
    "de": {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "diamond": "Raute", "hexagon": "Sechseck"},
    "es": {"circle": "círculo", "square": "cuadrado", "triangle": "triángulo", "diamond": "rombo", "hexagon": "hexágono"},
    "ru": {"circle": "круг", "square": "квадрат", "triangle": "треугольник", "diamond": "ромб", "hexagon": "шестиугольник"},
    "ja": {"circle": "円", "square": "正方形", "triangle": "三角形", "diamond": "ひし形", "hexagon": "六角形"},
}
GERMAN_GENDER = {"circle": "m", "square": "n", "triangle": "n", "diamond": "f", "hexagon": "n"}

MOLECULES = {  # name per language, formula, atoms (symbol, x, y in 0..1), bonds (i, j, order)
    "water": ({"en": "water", "zh": "水", "fr": "l'eau", "de": "Wasser", "es": "agua", "ru": "вода", "ja": "水"}, "H₂O",
              [("O", .5, .42), ("H", .28, .62), ("H", .72, .62)], [(0, 1, 1), (0, 2, 1)]),
    "co2": ({"en": "carbon dioxide", "zh": "二氧化碳", "fr": "le dioxyde de carbone", "de": "Kohlenstoffdioxid",
             "es": "dióxido de carbono", "ru": "углекислый газ", "ja": "二酸化炭素"}, "CO₂",
            [("O", .2, .5), ("C", .5, .5), ("O", .8, .5)], [(0, 1, 2), (1, 2, 2)]),
    "methane": ({"en": "methane", "zh": "甲烷", "fr": "le méthane", "de": "Methan", "es": "metano", "ru": "метан",
                 "ja": "メタン"}, "CH₄",
                [("C", .5, .5), ("H", .5, .2), ("H", .8, .5), ("H", .5, .8), ("H", .2, .5)],
                [(0, 1, 1), (0, 2, 1), (0, 3, 1), (0, 4, 1)]),
    "ethanol": ({"en": "ethanol", "zh": "乙醇", "fr": "l'éthanol", "de": "Ethanol", "es": "etanol", "ru": "этанол",
                 "ja": "エタノール"}, "C₂H₅OH",
                [("C", .3, .5), ("C", .52, .5), ("O", .74, .5), ("H", .92, .5), ("H", .3, .25), ("H", .3, .75),
                 ("H", .1, .5), ("H", .52, .25), ("H", .52, .75)],
                [(0, 1, 1), (1, 2, 1), (2, 3, 1), (0, 4, 1), (0, 5, 1), (0, 6, 1), (1, 7, 1), (1, 8, 1)]),
    "benzene": ({"en": "benzene", "zh": "苯", "fr": "le benzène", "de": "Benzol", "es": "benceno", "ru": "бензол",
                 "ja": "ベンゼン"}, "C₆H₆", [], []),  # ring built by benzene_atoms()
}
ATOM_WORDS = {"en": {"C": "carbon", "H": "hydrogen", "O": "oxygen"}, "zh": {"C": "碳", "H": "氢", "O": "氧"}}

PIPELINES = (
    ("Camera", "Preprocess", "Detector", "Tracker", "Display"),
    ("Microphone", "ADC", "DSP", "Amplifier", "Speaker"),
    ("Request", "Load balancer", "Web server", "Database"),
    ("Raw data", "Cleaning", "Training", "Evaluation", "Deployment"),
    ("Sensor", "Filter", "Controller", "Motor"),
    ("Idea", "Design", "Prototype", "Testing", "Release"),
)

CHART_TOPICS = (  # title, category labels, value range
    ("Sales by quarter (k units)", ("Q1", "Q2", "Q3", "Q4"), (10, 90)),
    ("Visitors by city (thousands)", ("Paris", "Berlin", "Madrid", "Rome", "Vienna"), (20, 95)),
    ("Books read per month", ("Jan", "Feb", "Mar", "Apr", "May", "Jun"), (1, 15)),
    ("Energy by source (TWh)", ("Solar", "Wind", "Hydro", "Gas", "Coal"), (5, 60)),
    ("Orders by weekday", ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"), (15, 80)),
    ("Average score by class", ("A", "B", "C", "D"), (55, 98)),
)
LINE_TOPICS = (  # title, x labels, value range
    ("Average temperature (°C)", ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul"), (-5, 30)),
    ("Website visitors (thousands)", ("2018", "2019", "2020", "2021", "2022", "2023", "2024"), (10, 90)),
    ("Revenue (million $)", ("2017", "2018", "2019", "2020", "2021", "2022"), (20, 80)),
    ("Rainfall (mm)", ("Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct"), (10, 120)),
)
PIE_TOPICS = (
    ("Market share", ("Alpha", "Beta", "Gamma", "Delta", "Other")),
    ("Household budget", ("Rent", "Food", "Transport", "Leisure", "Savings")),
    ("Survey answers", ("Yes", "No", "Not sure")),
    ("Fleet by fuel", ("Petrol", "Diesel", "Electric", "Hybrid")),
)
PLOT_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")

RECEIPT = {  # labels rendered on receipts, store names, item names, tax rate in percent
    "en": {"labels": ("Date", "Item", "Qty", "Price", "Subtotal", "Tax", "Total", "Thank you for shopping!"),
           "stores": ("GREEN LEAF MARKET", "CORNER GROCERY", "SUNRISE BAKERY"), "tax": 8,
           "items": ("Apples", "Bread", "Milk", "Coffee", "Eggs", "Cheese", "Rice", "Tea", "Butter", "Orange juice")},
    "fr": {"labels": ("Date", "Article", "Qté", "Prix", "Sous-total", "TVA", "Total", "Merci de votre visite !"),
           "stores": ("ÉPICERIE DU PORT", "MARCHÉ DES HALLES", "BOULANGERIE DU CENTRE"), "tax": 5.5,
           "items": ("Pommes", "Pain", "Lait", "Café", "Œufs", "Fromage", "Riz", "Thé", "Beurre", "Jus d'orange")},
    "de": {"labels": ("Datum", "Artikel", "Menge", "Preis", "Zwischensumme", "MwSt.", "Gesamt", "Vielen Dank für Ihren Einkauf!"),
           "stores": ("MARKTHALLE NORD", "FRISCHEMARKT MÜLLER", "BÄCKEREI SONNENSCHEIN"), "tax": 7,
           "items": ("Äpfel", "Brot", "Milch", "Kaffee", "Eier", "Käse", "Reis", "Tee", "Butter", "Orangensaft")},
    "es": {"labels": ("Fecha", "Artículo", "Cant.", "Precio", "Subtotal", "IVA", "Total", "¡Gracias por su compra!"),
           "stores": ("SUPERMERCADO LA PLAZA", "FRUTERÍA EL SOL", "PANADERÍA SAN JUAN"), "tax": 10,
           "items": ("Manzanas", "Pan", "Leche", "Café", "Huevos", "Queso", "Arroz", "Té", "Mantequilla", "Zumo de naranja")},
    "ru": {"labels": ("Дата", "Товар", "Кол.", "Цена", "Подытог", "НДС", "Итого", "Спасибо за покупку!"),
           "stores": ("МАГАЗИН «БЕРЁЗКА»", "ПРОДУКТЫ У ДОМА", "ПЕКАРНЯ «КОЛОСОК»"), "tax": 10,
           "items": ("Яблоки", "Хлеб", "Молоко", "Кофе", "Яйца", "Сыр", "Рис", "Чай", "Масло", "Апельсиновый сок")},
}

FORM = {  # title, field labels, sample names, cities
    "en": ("APPLICATION FORM", ("Full name", "Date of birth", "City", "Email", "Phone", "Plan"),
           ("Emily Carter", "James Wilson", "Olivia Brown", "Noah Taylor"), ("Boston", "Leeds", "Denver", "Perth")),
    "fr": ("FORMULAIRE D'INSCRIPTION", ("Nom complet", "Date de naissance", "Ville", "E-mail", "Téléphone", "Formule"),
           ("Camille Dubois", "Louis Martin", "Chloé Lefèvre", "Hugo Moreau"), ("Lyon", "Nantes", "Lille", "Genève")),
    "de": ("ANMELDEFORMULAR", ("Vollständiger Name", "Geburtsdatum", "Stadt", "E-Mail", "Telefon", "Tarif"),
           ("Lena Schneider", "Jonas Becker", "Marie Fischer", "Lukas Wagner"), ("Köln", "Leipzig", "Graz", "Bern")),
    "es": ("FORMULARIO DE SOLICITUD", ("Nombre completo", "Fecha de nacimiento", "Ciudad", "Correo", "Teléfono", "Plan"),
           ("Lucía García", "Mateo Fernández", "Sofía Martínez", "Pablo Ruiz"), ("Sevilla", "Valencia", "Bilbao", "Quito")),
    "ru": ("ЗАЯВЛЕНИЕ", ("ФИО", "Дата рождения", "Город", "Эл. почта", "Телефон", "Тариф"),
           ("Анна Иванова", "Дмитрий Смирнов", "Мария Кузнецова", "Иван Попов"), ("Казань", "Самара", "Томск", "Омск")),
}
PLANS = ("Basic", "Standard", "Premium")

NOTICE = {  # title, places, weekdays, sentences with {place} {day} {h1} {h2} {date} {phone} {email}
    "en": ("NOTICE", ("The library", "The swimming pool", "The museum", "The town hall"),
           ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
           ("{place} will be closed on {day} for maintenance.",
            "Opening hours are {h1}:00 to {h2}:00, Monday to Friday.",
            "Please return all borrowed items by {date}.",
            "For questions, call {phone} or write to {email}.",
            "Visitors must register at the front desk.",
            "Thank you for your understanding.")),
    "fr": ("AVIS", ("La bibliothèque", "La piscine", "La mairie", "La médiathèque"),
           ("lundi", "mardi", "mercredi", "jeudi", "vendredi"),
           ("{place} sera fermée le {day} pour travaux.",
            "Horaires d'ouverture : du lundi au vendredi, de {h1} h à {h2} h.",
            "Merci de rendre tous les documents empruntés avant le {date}.",
            "Pour toute question, appelez le {phone} ou écrivez à {email}.",
            "Les visiteurs doivent s'inscrire à l'accueil.",
            "Merci de votre compréhension.")),
    "de": ("HINWEIS", ("Die Bibliothek", "Das Schwimmbad", "Das Museum", "Das Rathaus"),
           ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag"),
           ("{place} ist am {day} wegen Wartungsarbeiten geschlossen.",
            "Öffnungszeiten: Montag bis Freitag, {h1}:00 bis {h2}:00 Uhr.",
            "Bitte geben Sie alle ausgeliehenen Medien bis zum {date} zurück.",
            "Bei Fragen rufen Sie {phone} an oder schreiben Sie an {email}.",
            "Besucher müssen sich am Empfang anmelden.",
            "Vielen Dank für Ihr Verständnis.")),
    "es": ("AVISO", ("La biblioteca", "La piscina", "La oficina de correos", "La sala de exposiciones"),
           ("lunes", "martes", "miércoles", "jueves", "viernes"),
           ("{place} permanecerá cerrada el {day} por mantenimiento.",
            "Horario de apertura: de lunes a viernes, de {h1}:00 a {h2}:00.",
            "Por favor, devuelva todos los préstamos antes del {date}.",
            "Para cualquier consulta, llame al {phone} o escriba a {email}.",
            "Los visitantes deben registrarse en la recepción.",
            "Gracias por su comprensión.")),
    "ru": ("ОБЪЯВЛЕНИЕ", ("библиотека", "бассейн", "музей", "читальный зал"),
           ("Понедельник", "Вторник", "Среда", "Четверг", "Пятница"),
           ("{day} — санитарный день: {place} не работает.",
            "Часы работы: с понедельника по пятницу, с {h1}:00 до {h2}:00.",
            "Пожалуйста, верните все взятые материалы до {date}.",
            "По вопросам звоните по телефону {phone} или пишите на {email}.",
            "Посетители должны зарегистрироваться на входе.",
            "Спасибо за понимание.")),
}

TABLES = {  # title, columns, numeric columns (value ranges), row labels
    "climate": ("City climate", ("City", "Jan (°C)", "Jul (°C)", "Rain (mm)"),
                {"Jan (°C)": (-8, 14), "Jul (°C)": (17, 34), "Rain (mm)": (15, 130)},
                ("Oslo", "Lisbon", "Warsaw", "Athens", "Dublin", "Prague", "Seoul", "Lima")),
    "inventory": ("Warehouse stock", ("Item", "Price ($)", "Stock", "Sold"),
                  {"Price ($)": (12, 320), "Stock": (0, 80), "Sold": (3, 150)},
                  ("Lamp", "Chair", "Desk", "Shelf", "Mirror", "Rug", "Sofa", "Clock")),
    "scores": ("Exam results", ("Student", "Math", "Physics", "Chemistry"),
               {"Math": (48, 100), "Physics": (45, 100), "Chemistry": (50, 100)},
               ("Alice", "Bruno", "Chen", "Diana", "Emil", "Farah", "Goro", "Hana")),
    "timetable": ("Departures", ("Train", "Departs", "Arrives", "Platform"), {"Platform": (1, 12)},
                  ("IC 101", "IC 115", "RE 204", "RE 218", "EC 330", "EC 347", "S 12", "S 25")),
}

PARALLEL = (  # the same sentence in every language, for translation dialogues
    {"en": "The train to the airport leaves every fifteen minutes.", "zh": "去机场的火车每十五分钟一班。",
     "fr": "Le train pour l'aéroport part toutes les quinze minutes.", "de": "Der Zug zum Flughafen fährt alle fünfzehn Minuten.",
     "es": "El tren al aeropuerto sale cada quince minutos.", "ru": "Поезд в аэропорт отправляется каждые пятнадцать минут.",
     "ja": "空港行きの電車は15分ごとに出発します。"},
    {"en": "Could you please send me the report by Friday?", "zh": "你能在周五之前把报告发给我吗？",
     "fr": "Pourriez-vous m'envoyer le rapport d'ici vendredi ?", "de": "Könnten Sie mir den Bericht bis Freitag schicken?",
     "es": "¿Podría enviarme el informe antes del viernes?", "ru": "Не могли бы вы прислать мне отчёт до пятницы?",
     "ja": "金曜日までに報告書を送っていただけますか？"},
    {"en": "It will rain tomorrow, so take an umbrella.", "zh": "明天会下雨，所以带把伞吧。",
     "fr": "Il pleuvra demain, alors prends un parapluie.", "de": "Morgen regnet es, also nimm einen Regenschirm mit.",
     "es": "Mañana lloverá, así que lleva un paraguas.", "ru": "Завтра будет дождь, так что возьми зонт.",
     "ja": "明日は雨が降るので、傘を持って行ってください。"},
    {"en": "This museum is closed on Mondays.", "zh": "这家博物馆周一闭馆。", "fr": "Ce musée est fermé le lundi.",
     "de": "Dieses Museum ist montags geschlossen.", "es": "Este museo cierra los lunes.",
     "ru": "Этот музей закрыт по понедельникам.", "ja": "この博物館は月曜日が休館です。"},
    {"en": "My favourite dish is vegetable soup with fresh bread.", "zh": "我最喜欢的菜是蔬菜汤配新鲜面包。",
     "fr": "Mon plat préféré est la soupe de légumes avec du pain frais.",
     "de": "Mein Lieblingsgericht ist Gemüsesuppe mit frischem Brot.",
     "es": "Mi plato favorito es la sopa de verduras con pan recién hecho.",
     "ru": "Моё любимое блюдо — овощной суп со свежим хлебом.", "ja": "私の好きな料理は、焼きたてのパンを添えた野菜スープです。"},
    {"en": "The meeting has been moved to three o'clock.", "zh": "会议改到了三点。",
     "fr": "La réunion a été déplacée à quinze heures.", "de": "Die Besprechung wurde auf fünfzehn Uhr verschoben.",
     "es": "La reunión se ha trasladado a las tres.", "ru": "Совещание перенесли на три часа.",
     "ja": "会議は3時に変更されました。"},
)
LANG_NAMES = {  # asking language -> target language -> name as the request phrases need it
    "en": {"en": "English", "zh": "Chinese", "fr": "French", "de": "German", "es": "Spanish", "ru": "Russian", "ja": "Japanese"},
    "zh": {"en": "英文", "zh": "中文", "fr": "法语", "de": "德语", "es": "西班牙语", "ru": "俄语", "ja": "日语"},
    "fr": {"en": "anglais", "zh": "chinois", "fr": "français", "de": "allemand", "es": "espagnol", "ru": "russe", "ja": "japonais"},
    "de": {"en": "Englische", "zh": "Chinesische", "fr": "Französische", "de": "Deutsche", "es": "Spanische",
           "ru": "Russische", "ja": "Japanische"},
    "es": {"en": "inglés", "zh": "chino", "fr": "francés", "de": "alemán", "es": "español", "ru": "ruso", "ja": "japonés"},
    "ru": {"en": "английский", "zh": "китайский", "fr": "французский", "de": "немецкий", "es": "испанский",
           "ru": "русский", "ja": "японский"},
    "ja": {"en": "英語", "zh": "中国語", "fr": "フランス語", "de": "ドイツ語", "es": "スペイン語", "ru": "ロシア語", "ja": "日本語"},
}

KNOWLEDGE = {  # two-exchange explanations: (question, answer, follow-up, answer)
    "en": (
        ("What is a mixture-of-experts layer in a neural network?",
         "A mixture-of-experts (MoE) layer holds many small feed-forward networks, the experts, plus a router. For "
         "each token the router scores the experts and only the top few run, so the model has many parameters but "
         "spends little compute per token.",
         "Why does quantizing such a model need care?",
         "Each expert only sees the tokens routed to it. If calibration data never reaches an expert, its "
         "quantization statistics are missing or noisy, so a calibration set must be varied enough for every expert "
         "to receive tokens."),
        ("Explain photosynthesis in two sentences.",
         "Plants use light energy to turn carbon dioxide and water into glucose, releasing oxygen. It happens in the "
         "chloroplasts, where chlorophyll absorbs mostly red and blue light.",
         "Why are leaves green, then?",
         "Chlorophyll absorbs red and blue light well but reflects much of the green light, so green is what reaches "
         "our eyes."),
        ("If I save 1000 euros at 5% interest per year, compounded yearly, how much do I have after 3 years?",
         "1000 × 1.05³ ≈ 1157.63 euros.",
         "And with simple interest?",
         "Simple interest pays 5% of the original 1000 each year: 1000 + 3 × 50 = 1150 euros, so compounding earns "
         "7.63 euros more."),
        ("What is recursion in programming?",
         "Recursion is when a function calls itself on a smaller version of the same problem, until it reaches a "
         "base case that it can answer directly.",
         "What happens without a base case?",
         "The calls never stop: each one adds a frame to the call stack until the program runs out of stack space "
         "and crashes, for example with a RecursionError in Python."),
    ),
    "zh": (
        ("什么是混合专家（MoE）模型？",
         "混合专家模型在某些层里放了许多小的前馈网络（专家）和一个路由器。每个词元只由路由器选出的少数几个专家处理，因此模型参数很多，但每个词元的计算量很小。",
         "量化这类模型要注意什么？",
         "每个专家只看到被路由给它的词元。如果校准数据从未到达某个专家，它的量化统计就会缺失或不准确，所以校准集要足够多样，让每个专家都能分到词元。"),
        ("用两句话解释光合作用。",
         "植物利用光能把二氧化碳和水转化为葡萄糖，并释放出氧气。这个过程发生在叶绿体中，叶绿素主要吸收红光和蓝光。",
         "那为什么叶子是绿色的？",
         "叶绿素对绿光吸收很少，大部分绿光被反射出来，所以我们看到的叶子是绿色的。"),
        ("我存1000元，年利率5%，按年复利，3年后有多少钱？",
         "1000 × 1.05³ ≈ 1157.63元。",
         "如果是单利呢？",
         "单利每年只按本金1000元计息50元，3年后是1000 + 3 × 50 = 1150元，比复利少7.63元。"),
        ("编程中的递归是什么？",
         "递归是指函数调用自身来处理规模更小的同类问题，直到遇到可以直接求解的基本情况。",
         "如果没有基本情况会怎样？",
         "调用将永不停止，每次调用都会占用一层调用栈，最终栈空间耗尽，程序崩溃，例如Python会抛出RecursionError。"),
    ),
    "fr": (
        ("Explique la photosynthèse en deux phrases.",
         "Les plantes utilisent l'énergie de la lumière pour transformer le dioxyde de carbone et l'eau en glucose, en "
         "libérant de l'oxygène. Cela se passe dans les chloroplastes, où la chlorophylle absorbe surtout la lumière "
         "rouge et bleue.",
         "Pourquoi les feuilles sont-elles vertes, alors ?",
         "La chlorophylle absorbe peu la lumière verte et la réfléchit en grande partie : c'est donc le vert qui "
         "parvient à nos yeux."),
        ("Qu'est-ce qu'un modèle à mélange d'experts ?",
         "Un modèle à mélange d'experts (MoE) contient, dans certaines couches, de nombreux petits réseaux appelés "
         "experts ainsi qu'un routeur. Pour chaque jeton, le routeur n'active que quelques experts : le modèle a "
         "beaucoup de paramètres mais calcule peu par jeton.",
         "Pourquoi la quantification d'un tel modèle demande-t-elle des précautions ?",
         "Chaque expert ne voit que les jetons qui lui sont envoyés. Si les données de calibration n'atteignent "
         "jamais un expert, ses statistiques de quantification manquent ; le jeu de calibration doit donc être assez "
         "varié pour que chaque expert reçoive des jetons."),
    ),
    "de": (
        ("Was ist Rekursion in der Programmierung?",
         "Bei der Rekursion ruft sich eine Funktion selbst mit einer kleineren Version desselben Problems auf, bis "
         "sie einen Basisfall erreicht, den sie direkt lösen kann.",
         "Was passiert ohne Basisfall?",
         "Die Aufrufe enden nie: Jeder belegt einen weiteren Rahmen auf dem Aufrufstapel, bis der Speicher erschöpft "
         "ist und das Programm abbricht, in Python etwa mit einem RecursionError."),
        ("Ich lege 1000 Euro zu 5 % Zinsen pro Jahr an, jährlich verzinst. Wie viel habe ich nach 3 Jahren?",
         "1000 × 1,05³ ≈ 1157,63 Euro.",
         "Und ohne Zinseszins?",
         "Bei einfacher Verzinsung gibt es jedes Jahr 5 % auf die ursprünglichen 1000 Euro: 1000 + 3 × 50 = 1150 "
         "Euro, also 7,63 Euro weniger."),
    ),
    "es": (
        ("Explica la fotosíntesis en dos frases.",
         "Las plantas usan la energía de la luz para transformar el dióxido de carbono y el agua en glucosa, "
         "liberando oxígeno. Ocurre en los cloroplastos, donde la clorofila absorbe sobre todo la luz roja y azul.",
         "¿Y por qué las hojas son verdes?",
         "La clorofila absorbe poca luz verde y refleja la mayor parte, así que el verde es lo que llega a nuestros ojos."),
        ("¿Qué es la recursión en programación?",
         "La recursión consiste en que una función se llame a sí misma con una versión más pequeña del mismo "
         "problema, hasta llegar a un caso base que puede resolver directamente.",
         "¿Qué pasa si no hay caso base?",
         "Las llamadas no terminan nunca: cada una ocupa un marco más en la pila de llamadas hasta que se agota y el "
         "programa falla, por ejemplo con un RecursionError en Python."),
    ),
    "ru": (
        ("Объясни фотосинтез в двух предложениях.",
         "Растения используют энергию света, чтобы превращать углекислый газ и воду в глюкозу, выделяя кислород. "
         "Это происходит в хлоропластах, где хлорофилл поглощает в основном красный и синий свет.",
         "Почему же тогда листья зелёные?",
         "Хлорофилл плохо поглощает зелёный свет и отражает большую его часть, поэтому до наших глаз доходит именно "
         "зелёный цвет."),
        ("Я кладу 1000 рублей под 5 % годовых с ежегодной капитализацией. Сколько будет через 3 года?",
         "1000 × 1,05³ ≈ 1157,63 рубля.",
         "А без капитализации?",
         "При простых процентах каждый год начисляется 5 % от исходных 1000 рублей: 1000 + 3 × 50 = 1150 рублей, "
         "то есть на 7,63 рубля меньше."),
    ),
    "ja": (
        ("光合成を2文で説明してください。",
         "植物は光のエネルギーを使って二酸化炭素と水からブドウ糖を作り、酸素を放出します。この反応は葉緑体で起こり、クロロフィルは主に赤と青の光を吸収します。",
         "では、なぜ葉は緑色なのですか？",
         "クロロフィルは緑の光をあまり吸収せず、その多くを反射するため、私たちの目には緑色に見えます。"),
        ("プログラミングにおける再帰とは何ですか？",
         "再帰とは、関数が同じ問題のより小さな場合について自分自身を呼び出し、直接答えられる基底ケースに達するまで繰り返す手法です。",
         "基底ケースがないとどうなりますか？",
         "呼び出しが終わらず、呼び出しごとにスタックフレームが積み重なって最終的にスタックが溢れ、プログラムが異常終了します。PythonならRecursionErrorになります。"),
    ),
}

CODE_TASKS = (  # name, description per language, plan (en, zh), code
    ("is_palindrome",
     {"en": "returns True if a string reads the same forwards and backwards, ignoring case and spaces",
      "zh": "判断一个字符串在忽略大小写和空格后是否为回文，是则返回True",
      "fr": "renvoie True si une chaîne se lit de la même façon dans les deux sens, sans tenir compte de la casse ni des espaces",
      "de": "True zurückgibt, wenn sich ein String vorwärts und rückwärts gleich liest (Groß-/Kleinschreibung und Leerzeichen ignoriert)",
      "es": "devuelva True si una cadena se lee igual al derecho y al revés, sin distinguir mayúsculas ni espacios",
      "ru": "возвращает True, если строка читается одинаково слева направо и справа налево без учёта регистра и пробелов",
      "ja": "大文字・小文字と空白を無視して、文字列が前から読んでも後ろから読んでも同じならTrueを返す"},
     {"en": "normalise the string (lower case, drop spaces) and compare it with its reverse",
      "zh": "先规范化字符串（转小写、去空格），再与其反转比较"},
     'def is_palindrome(text: str) -> bool:\n    cleaned = "".join(text.lower().split())\n    return cleaned == cleaned[::-1]'),
    ("fibonacci",
     {"en": "returns the n-th Fibonacci number iteratively (fibonacci(0) == 0)",
      "zh": "用迭代方式返回第n个斐波那契数（fibonacci(0) == 0）",
      "fr": "renvoie le n-ième nombre de Fibonacci de façon itérative (fibonacci(0) == 0)",
      "de": "die n-te Fibonacci-Zahl iterativ berechnet (fibonacci(0) == 0)",
      "es": "devuelva el n-ésimo número de Fibonacci de forma iterativa (fibonacci(0) == 0)",
      "ru": "итеративно возвращает n-е число Фибоначчи (fibonacci(0) == 0)",
      "ja": "n番目のフィボナッチ数を反復で求めて返す（fibonacci(0) == 0）"},
     {"en": "keep two running values a, b and advance them n times", "zh": "维护两个变量a、b，迭代n次"},
     "def fibonacci(n: int) -> int:\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"),
    ("word_count",
     {"en": "counts how often each word occurs in a text, case-insensitively, and returns a dict",
      "zh": "统计文本中每个单词出现的次数（不区分大小写），并返回一个字典",
      "fr": "compte le nombre d'occurrences de chaque mot d'un texte, sans tenir compte de la casse, et renvoie un dictionnaire",
      "de": "zählt, wie oft jedes Wort in einem Text vorkommt (ohne Beachtung der Groß-/Kleinschreibung), und ein Dict zurückgibt",
      "es": "cuente cuántas veces aparece cada palabra en un texto, sin distinguir mayúsculas, y devuelva un diccionario",
      "ru": "подсчитывает, сколько раз каждое слово встречается в тексте без учёта регистра, и возвращает словарь",
      "ja": "テキスト中の各単語の出現回数を大文字・小文字を区別せずに数えて辞書で返す"},
     {"en": "lower-case the text, split on whitespace and count with a dict", "zh": "转成小写、按空白切分，再用字典计数"},
     "def word_count(text: str) -> dict[str, int]:\n    counts: dict[str, int] = {}\n"
     "    for word in text.lower().split():\n        counts[word] = counts.get(word, 0) + 1\n    return counts"),
    ("flatten",
     {"en": "flattens an arbitrarily nested list of lists into a single list",
      "zh": "把任意层嵌套的列表展平成一个列表",
      "fr": "aplatit une liste de listes imbriquées à n'importe quelle profondeur en une seule liste",
      "de": "eine beliebig tief verschachtelte Liste in eine flache Liste umwandelt",
      "es": "aplane una lista anidada a cualquier profundidad en una sola lista",
      "ru": "превращает список произвольной вложенности в плоский список",
      "ja": "任意の深さに入れ子になったリストを1つの平らなリストに変換する"},
     {"en": "recurse into lists and extend the result, append everything else", "zh": "遇到列表就递归展开，否则直接追加"},
     "def flatten(nested: list) -> list:\n    flat = []\n    for item in nested:\n"
     "        if isinstance(item, list):\n            flat.extend(flatten(item))\n        else:\n"
     "            flat.append(item)\n    return flat"),
)


# ----------------------------------------------------------------------------------------------------
# Rendering helpers
# ----------------------------------------------------------------------------------------------------

INK = (30, 30, 30)
PAPER = (252, 250, 244)
PASTELS = ((236, 244, 252), (248, 240, 228), (238, 248, 236), (246, 238, 248), (250, 250, 250))
DECIMAL_COMMA = ("fr", "de", "es", "ru")


@lru_cache(maxsize=None)
def font(size: int, style: str = "sans") -> ImageFont.FreeTypeFont:
    # BASIC layout: raqm (when installed) may shape text differently between machines.
    return ImageFont.truetype(str(FONT_DIR / FONT_FILES[style]), size, layout_engine=ImageFont.Layout.BASIC)


def png_bytes(img: Image.Image, colors: int) -> bytes:
    """A palette PNG: few colours keep the committed set small; no metadata, so bytes are reproducible."""
    pal = img.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def new_plot(size: tuple[int, int]):
    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    return fig, fig.add_subplot()


def render(fig: Figure) -> Image.Image:
    # Rasterise through the Agg canvas instead of savefig: savefig writes version metadata into the PNG.
    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    return rgba.convert("RGB")


def tidy(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)


def centered_text(draw: ImageDraw.ImageDraw, center: tuple[float, float], text: str, fnt, fill=INK) -> None:
    draw.text(center, text, font=fnt, fill=fill, anchor="mm")


def wrap(text: str, fnt, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and fnt.getlength(candidate) > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + [line] if line else lines


def arrow(draw: ImageDraw.ImageDraw, start, end, fill=INK, width=2) -> None:
    draw.line([start, end], fill=fill, width=width)
    angle = math.atan2(end[1] - start[1], end[0] - start[0])
    head = [end] + [(end[0] - 10 * math.cos(angle + d), end[1] - 10 * math.sin(angle + d)) for d in (0.4, -0.4)]
    draw.polygon(head, fill=fill)


def shape_points(shape: str, box: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    x1, y1, x2, y2 = box
    cx, cy, w = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1
    if shape == "triangle":
        return [(x1, y2), (cx, y1), (x2, y2)]
    if shape == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    return [(x1 + w / 4, y1), (x2 - w / 4, y1), (x2, cy), (x2 - w / 4, y2), (x1 + w / 4, y2), (x1, cy)]  # hexagon


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill) -> None:
    outline = (40, 40, 40)
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=2)
    elif shape == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=2)
    else:
        draw.polygon(shape_points(shape, box), fill=fill, outline=outline, width=2)


def shape_box(shape: str, x: int, y: int, size: int) -> tuple[int, int, int, int]:
    # Hexagons are wider than tall; every other shape fills a square.
    height = round(size * 0.87) if shape == "hexagon" else size
    return (x, y, x + size, y + height)


# ----------------------------------------------------------------------------------------------------
# Formatting helpers
# ----------------------------------------------------------------------------------------------------

def num(x: float, lang: str = "en", digits: int = 2) -> str:
    text = f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else str(round(x))
    text = "0" if text == "-0" else text
    return text.replace(".", ",") if lang in DECIMAL_COMMA else text


def money(cents: int, lang: str) -> str:
    amount = f"{cents / 100:.2f}"
    if lang in ("fr", "de", "es"):
        return amount.replace(".", ",") + " €"
    if lang == "ru":
        return amount.replace(".", ",") + " руб."
    return "$" + amount


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def listing(pairs, lang: str, unit: str = "") -> str:
    if lang in ("zh", "ja"):
        return "，".join(f"{k}={v}{unit}" for k, v in pairs)
    return ", ".join(f"{k} = {v}{unit}" for k, v in pairs)


def join_items(items: list[str], lang: str) -> str:
    return ("、" if lang in ("zh", "ja") else ", ").join(items)


def json_block(obj) -> str:
    return "```json\n" + json.dumps(obj, ensure_ascii=False, indent=2) + "\n```"


def obj_phrase(lang: str, color: str, shape: str) -> str:
    """'the red circle' with the article and agreement each language needs (nominative)."""
    c, s = COLOR_WORDS[lang][color], SHAPE_WORDS[lang][shape]
    if lang == "en":
        return f"the {c} {s}"
    if lang == "zh":
        return f"{c}的{s}"
    if lang == "fr":
        return f"{'l' + chr(39) if s[0] in 'aeiouh' else 'le '}{s} {c}"
    if lang == "de":
        gender = GERMAN_GENDER[shape]
        return f"{dict(m='der', n='das', f='die')[gender]} {c}e {s}"
    if lang == "es":
        return f"el {s} {c}"
    return f"{c} {s}" if lang == "ru" else f"{c}{s}"


def bare_label(lang: str, color: str, shape: str) -> str:
    """'red circle' without an article, as a detection label."""
    c, s = COLOR_WORDS[lang][color], SHAPE_WORDS[lang][shape]
    if lang in ("fr", "es"):
        return f"{s} {c}"
    if lang == "de":
        return f"{c}{dict(m='er', n='es', f='e')[GERMAN_GENDER[shape]]} {s}"
    if lang in ("en", "ru"):
        return f"{c} {s}"
    return c + s


def norm_box(box, size) -> list[int]:
    """Pixel box -> [x1, y1, x2, y2] on the 0-1000 scale ERNIE-4.5-VL (like Qwen-VL) answers in."""
    w, h = size
    return [round(box[0] * 1000 / w), round(box[1] * 1000 / h), round(box[2] * 1000 / w), round(box[3] * 1000 / h)]


def box_str(box) -> str:
    return "[" + ", ".join(str(v) for v in box) + "]"


# ----------------------------------------------------------------------------------------------------
# Sample context: one per sample, with its own RNG and the files it writes
# ----------------------------------------------------------------------------------------------------

@dataclass
class Ctx:
    sid: str
    index: int
    lang: str
    thinking: bool
    rng: random.Random
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def render_lang(self) -> str:
        """The language for text drawn in pictures (DejaVu has no CJK glyphs)."""
        return self.lang if self.lang in RENDER_LANGS else "en"

    def t(self, key: str, **fields) -> str:
        return T[key][self.lang].format(**fields)

    def image(self, img: Image.Image, *, colors: int = 32, tag: str = "") -> dict:
        rel = f"images/{self.sid}{tag}.png"
        self.files[rel] = png_bytes(img, colors)
        return {"type": "image", "image": rel}

    def video(self, frames: list[Image.Image], *, colors: int = 16) -> dict:
        rels = [f"images/{self.sid}_f{k}.png" for k in range(len(frames))]
        for rel, frame in zip(rels, frames):
            self.files[rel] = png_bytes(frame, colors)
        return {"type": "video", "video": rels}

    def reply(self, answer: str, think_key: str | None = None, fields: dict | None = None) -> dict:
        """The assistant turn; in Thinking samples the reasoning comes first, as the -Thinking model writes it."""
        if self.thinking:
            reasoning = R[think_key][self.lang].format(**(fields or {}))
            answer = f"<think>\n{reasoning}\n</think>\n\n{answer}"
        return message("assistant", answer)


def message(role: str, *items) -> dict:
    return {"role": role, "content": [text_item(i) if isinstance(i, str) else i for i in items]}


def text_item(text: str) -> dict:
    return {"type": "text", "text": text}


def qa(ctx: Ctx, media: list[dict], q_key: str, a_key: str, think_key: str | None, **fields) -> list[dict]:
    """One user turn (pictures, then the question) and its answer, both from the phrase tables."""
    return [message("user", *media, ctx.t(q_key, **fields)), ctx.reply(ctx.t(a_key, **fields), think_key, fields)]


# ----------------------------------------------------------------------------------------------------
# Charts (matplotlib)
# ----------------------------------------------------------------------------------------------------

CHART_SIZES = ((448, 336), (416, 312), (384, 288))


def bar_chart(title: str, labels, values, color: str, size) -> Image.Image:
    fig, ax = new_plot(size)
    bars = ax.bar(labels, values, color=color)
    ax.bar_label(bars, fontsize=8)
    ax.set_title(title)
    ax.set_ylim(0, max(values) * 1.18)
    ax.tick_params(axis="x", labelsize=8)
    tidy(ax)
    return render(fig)


def line_chart(title: str, xs, values, color: str, size) -> Image.Image:
    fig, ax = new_plot(size)
    ax.plot(range(len(xs)), values, marker="o", color=color)
    for k, v in enumerate(values):
        ax.annotate(str(v), (k, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    span = max(values) - min(values)
    ax.set_ylim(min(values) - 0.15 * span, max(values) + 0.2 * span)
    ax.set_xticks(range(len(xs)), xs)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    tidy(ax)
    return render(fig)


def pie_chart(title: str, labels, shares, size) -> Image.Image:
    fig, ax = new_plot(size)
    ax.pie(shares, labels=labels, colors=PLOT_COLORS[: len(labels)], autopct=lambda p: f"{p:.0f}%",
           startangle=90, counterclock=False, wedgeprops={"linewidth": 1, "edgecolor": "white"})
    ax.set_title(title)
    ax.axis("equal")
    return render(fig)


def trend_series(rng: random.Random, shape: str, n: int, lo: int, hi: int) -> list[int]:
    """Values with the given overall shape, a little noise, and a unique maximum and minimum."""
    span = hi - lo
    apex = rng.randint(2, n - 3)
    while True:
        if shape in ("rise", "fall"):
            base = [0.15 + 0.7 * k / (n - 1) for k in range(n)]
        else:
            base = [0.85 - 0.7 * abs(k - apex) / max(apex, n - 1 - apex) for k in range(n)]
        if shape in ("fall", "dip"):
            base = [1 - b for b in base]
        values = [round(lo + span * b + rng.uniform(-span / 14, span / 14)) for b in base]
        if values.count(max(values)) == 1 and values.count(min(values)) == 1:
            return values


def pie_shares(rng: random.Random, k: int) -> list[int]:
    while True:
        cuts = sorted(rng.sample(range(1, 100), k - 1))
        shares = [b - a for a, b in zip([0, *cuts], [*cuts, 100])]
        if min(shares) >= 6 and len(set(shares)) == k:
            return shares


def build_chart(ctx: Ctx) -> list[dict]:
    builder = (bar_sample, line_sample, pie_sample)[ctx.index % 3]
    return builder(ctx, (ctx.index // 3) % 2)


def bar_sample(ctx: Ctx, variant: int) -> list[dict]:
    title, labels, (lo, hi) = ctx.rng.choice(CHART_TOPICS)
    values = ctx.rng.sample(range(lo, hi + 1), len(labels))
    img = bar_chart(title, labels, values, ctx.rng.choice(PLOT_COLORS), ctx.rng.choice(CHART_SIZES))
    pairs = list(zip(labels, values))
    top, low = max(pairs, key=lambda p: p[1]), min(pairs, key=lambda p: p[1])
    fields = dict(title=title, label=top[0], value=top[1], min_label=low[0], min_value=low[1],
                  listing=listing(pairs, ctx.lang), total=sum(values),
                  lines="\n".join(f"- {label}: {value}" for label, value in pairs))
    key = ("bar_max", "bar_read")[variant]
    return qa(ctx, [ctx.image(img)], f"{key}_q", f"{key}_a", key, **fields)


def line_sample(ctx: Ctx, variant: int) -> list[dict]:
    title, xs, (lo, hi) = ctx.rng.choice(LINE_TOPICS)
    shape = ctx.rng.choice(tuple(LINE_TRENDS))
    values = trend_series(ctx.rng, shape, len(xs), lo, hi)
    img = line_chart(title, xs, values, ctx.rng.choice(PLOT_COLORS), ctx.rng.choice(CHART_SIZES))
    i_max, i_min = values.index(max(values)), values.index(min(values))
    fields = dict(trend=LINE_TRENDS[shape][ctx.lang], first=values[0], last=values[-1], x0=xs[0], x1=xs[-1],
                  max=values[i_max], xmax=xs[i_max], min=values[i_min], xmin=xs[i_min],
                  listing=listing(zip(xs, values), ctx.lang))
    key = ("line_trend", "line_max")[variant]
    return qa(ctx, [ctx.image(img)], f"{key}_q", f"{key}_a", "line", **fields)


def pie_sample(ctx: Ctx, variant: int) -> list[dict]:
    title, labels = ctx.rng.choice(PIE_TOPICS)
    shares = pie_shares(ctx.rng, len(labels))
    img = pie_chart(title, labels, shares, ctx.rng.choice(((336, 336), (384, 320))))
    pairs = list(zip(labels, shares))
    top = max(pairs, key=lambda p: p[1])
    a, b = ctx.rng.sample(pairs, 2)
    fields = dict(label=top[0], value=top[1], a=a[0], va=a[1], b=b[0], vb=b[1], total=a[1] + b[1],
                  listing=listing(pairs, ctx.lang, "%"))
    key = ("pie_max", "pie_pair")[variant]
    return qa(ctx, [ctx.image(img)], f"{key}_q", f"{key}_a", "pie", **fields)


def build_multi_image(ctx: Ctx) -> list[dict]:
    """Two bar charts of the same categories in consecutive years, compared in one question."""
    title, labels, (lo, hi) = ctx.rng.choice(CHART_TOPICS)
    y1 = ctx.rng.randint(2019, 2023)
    while True:
        v1, v2 = (ctx.rng.sample(range(lo, hi + 1), len(labels)) for _ in range(2))
        if sum(v1) != sum(v2):
            break
    color, size = ctx.rng.choice(PLOT_COLORS), ctx.rng.choice(CHART_SIZES[1:])
    media = [ctx.image(bar_chart(f"{title}, {year}", labels, values, color, size), tag=tag)
             for year, values, tag in ((y1, v1, "_a"), (y1 + 1, v2, "_b"))]
    t1, t2 = sum(v1), sum(v2)
    fields = dict(y1=y1, y2=y1 + 1, t1=t1, t2=t2, k=1 if t1 > t2 else 2, d=abs(t1 - t2),
                  l1=listing(zip(labels, v1), ctx.lang), l2=listing(zip(labels, v2), ctx.lang))
    return qa(ctx, media, "multi_q", "multi_a", "multi", **fields)


# ----------------------------------------------------------------------------------------------------
# Documents: receipts, forms, notices (OCR)
# ----------------------------------------------------------------------------------------------------

RU_LATIN = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
                    ("a b v g d e e zh z i y k l m n o p r s t u f kh ts ch sh shch _ y _ e yu ya").split()))
PHONE_PREFIX = {"en": "+1", "fr": "+33", "de": "+49", "es": "+34", "ru": "+7"}


def email_for(name: str) -> str:
    latin = "".join(RU_LATIN.get(ch, ch) for ch in name.lower()).replace("_", "")
    ascii_only = unicodedata.normalize("NFKD", latin).encode("ascii", "ignore").decode()
    return ascii_only.replace(" ", ".") + "@example.com"


def phone(rng: random.Random, lang: str) -> str:
    return f"{PHONE_PREFIX[lang]} {rng.randint(200, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"


def build_document(ctx: Ctx) -> list[dict]:
    return (receipt_sample, form_sample, notice_sample)[ctx.index % 3](ctx)


def receipt_row(a: str, b: str, c: str) -> str:
    return f"{a[:18]:<18}{b:>4}{c:>12}"


def draw_receipt(lang: str, store: str, date: str, items, subtotal: int, tax: int, total: int) -> Image.Image:
    spec = RECEIPT[lang]
    date_l, item_l, qty_l, price_l, sub_l, tax_l, total_l, thanks = spec["labels"]
    rows = [(f"{date_l}: {date}", "mono"), ("-" * 34, "mono"), (receipt_row(item_l, qty_l, price_l), "mono")]
    rows += [(receipt_row(name, str(qty), money(qty * cents, lang)), "mono") for name, qty, cents in items]
    rows += [("-" * 34, "mono"), (receipt_row(sub_l, "", money(subtotal, lang)), "mono"),
             (receipt_row(f"{tax_l} {num(spec['tax'], lang)}%", "", money(tax, lang)), "mono"),
             (receipt_row(total_l, "", money(total, lang)), "mono_bold")]
    width = 28 + round(font(13, "mono").getlength("M" * 34))
    img = Image.new("RGB", (width, 70 + 19 * len(rows) + 30), PAPER)
    draw = ImageDraw.Draw(img)
    centered_text(draw, (width / 2, 26), store, font(15, "bold"))
    for k, (line, style) in enumerate(rows):
        draw.text((14, 52 + 19 * k), line, font=font(13, style), fill=INK)
    centered_text(draw, (width / 2, 52 + 19 * len(rows) + 22), thanks, font(12))
    return img


def receipt_sample(ctx: Ctx) -> list[dict]:
    lang, rng = ctx.render_lang, ctx.rng
    spec = RECEIPT[lang]
    names = rng.sample(spec["items"], rng.randint(3, 6))
    items = [(name, rng.randint(1, 4), rng.randint(80, 1500)) for name in names]  # quantity, unit price in cents
    subtotal = sum(qty * cents for _, qty, cents in items)
    tax = round(subtotal * spec["tax"] / 100)
    date = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(8, 21):02d}:{rng.randint(0, 59):02d}"
    img = draw_receipt(lang, rng.choice(spec["stores"]), date, items, subtotal, tax, subtotal + tax)
    media = [ctx.image(img, colors=16)]
    if (ctx.index // 3) % 2 == 0:
        return qa(ctx, media, "receipt_total_q", "receipt_total_a", None, total=money(subtotal + tax, lang),
                  subtotal=money(subtotal, lang), tax=money(tax, lang))
    rows = [{"item": name, "qty": qty, "price": money(qty * cents, lang)} for name, qty, cents in items]
    return [message("user", *media, ctx.t("receipt_items_q")), ctx.reply(json_block(rows))]


def draw_form(title: str, fields: dict[str, str], plan_label: str, plan: str) -> Image.Image:
    img = Image.new("RGB", (448, 330), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((6, 6, 441, 323), outline=(120, 120, 120), width=2)
    centered_text(draw, (224, 30), title, font(17, "bold"))
    y = 64
    for label, value in fields.items():
        draw.text((20, y), label + ":", font=font(13), fill=(70, 70, 70))
        if label == plan_label:
            draw_checkboxes(draw, (172, y), plan)
        else:
            draw.text((176, y - 2), value, font=font(14, "serif_italic"), fill=(20, 50, 150))
            draw.line((172, y + 17, 428, y + 17), fill=(150, 150, 150), width=1)
        y += 42
    return img


def draw_checkboxes(draw: ImageDraw.ImageDraw, origin: tuple[int, int], chosen: str) -> None:
    x, y = origin
    for option in PLANS:
        draw.rectangle((x, y, x + 14, y + 14), outline=INK, width=2)
        if option == chosen:
            draw.line((x + 3, y + 3, x + 11, y + 11), fill=(20, 50, 150), width=2)
            draw.line((x + 11, y + 3, x + 3, y + 11), fill=(20, 50, 150), width=2)
        draw.text((x + 20, y - 1), option, font=font(13), fill=INK)
        x += 28 + round(font(13).getlength(option))


def form_sample(ctx: Ctx) -> list[dict]:
    lang, rng = ctx.render_lang, ctx.rng
    title, labels, names, cities = FORM[lang]
    name = rng.choice(names)
    dob = f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1958, 2005)}"
    values = (name, dob, rng.choice(cities), email_for(name), phone(rng, lang), rng.choice(PLANS))
    fields = dict(zip(labels, values))
    img = draw_form(title, fields, labels[-1], values[-1])
    return [message("user", ctx.image(img, colors=16), ctx.t("form_q")), ctx.reply(json_block(fields))]


def draw_notice(title: str, body: str, style: int) -> Image.Image:
    body_font = font(14, "serif" if style == 2 else "sans")
    lines = wrap(body, body_font, 400)
    img = Image.new("RGB", (448, 86 + 21 * len(lines)), PAPER if style else "white")
    draw = ImageDraw.Draw(img)
    if style == 1:  # a coloured header band
        draw.rectangle((0, 0, 447, 44), fill=(34, 70, 130))
        centered_text(draw, (224, 23), title, font(19, "bold"), fill="white")
    else:
        centered_text(draw, (224, 26), title, font(19, "bold"), fill=(170, 30, 30) if style == 2 else INK)
        draw.line((24, 46, 424, 46), fill=INK, width=2)
    for k, line in enumerate(lines):
        draw.text((24, 60 + 21 * k), line, font=body_font, fill=INK)
    draw.rectangle((2, 2, 445, img.height - 3), outline=(100, 100, 100), width=2)
    return img


def notice_sample(ctx: Ctx) -> list[dict]:
    lang, rng = ctx.render_lang, ctx.rng
    title, places, days, sentences = NOTICE[lang]
    day, month = rng.randint(1, 28), rng.randint(1, 12)
    fills = dict(place=rng.choice(places), day=rng.choice(days), h1=rng.randint(7, 10), h2=rng.randint(17, 21),
                 date=f"{month:02d}/{day:02d}/2024" if lang == "en" else f"{day:02d}.{month:02d}.2024",
                 phone=phone(rng, lang), email=rng.choice(("info@library.example", "desk@city.example")))
    keep = [0, *sorted(rng.sample(range(1, len(sentences)), 3))]
    body = " ".join(sentences[k].format(**fills) for k in keep)
    img = draw_notice(title, body, rng.randrange(3))
    return [message("user", ctx.image(img, colors=16), ctx.t("ocr_q")), ctx.reply(f"{title}\n\n{body}")]


# ----------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------

HEADER_FILLS = ((214, 226, 242), (226, 238, 220), (240, 228, 214))


def draw_table(title: str, cols, rows, header_fill) -> Image.Image:
    cell, head = font(13), font(13, "bold")
    widths = [max(round(head.getlength(c)), *(round(cell.getlength(r[k])) for r in rows)) + 22
              for k, c in enumerate(cols)]
    width, row_h = sum(widths) + 32, 26
    img = Image.new("RGB", (width, 56 + row_h * (len(rows) + 1) + 14), "white")
    draw = ImageDraw.Draw(img)
    draw.text((16, 14), title, font=font(15, "bold"), fill=INK)
    top = 46
    for r, values in enumerate([cols, *rows]):
        y = top + r * row_h
        fill = header_fill if r == 0 else ((246, 246, 246) if r % 2 == 0 else "white")
        draw.rectangle((16, y, 16 + sum(widths), y + row_h), fill=fill, outline=(160, 160, 160))
        x = 16
        for k, value in enumerate(values):
            draw.text((x + 11, y + 5), value, font=head if r == 0 else cell, fill=INK)
            x += widths[k]
            draw.line((x, y, x, y + row_h), fill=(160, 160, 160))
    return img


def table_rows(rng: random.Random, topic: str, n: int) -> list[list[str]]:
    _, cols, numeric, pool = TABLES[topic]
    labels = rng.sample(pool, n)
    if topic == "timetable":
        starts = sorted(rng.sample(range(6 * 60, 21 * 60, 5), n))
        ends = [s + rng.randrange(30, 200, 5) for s in starts]
        return [[label, f"{s // 60:02d}:{s % 60:02d}", f"{e // 60:02d}:{e % 60:02d}", str(rng.randint(1, 12))]
                for label, s, e in zip(labels, starts, ends)]
    columns = [rng.sample(range(lo, hi + 1), n) for lo, hi in (numeric[c] for c in cols[1:])]
    return [[label, *(str(col[r]) for col in columns)] for r, label in enumerate(labels)]


def markdown_table(cols, rows) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def build_table(ctx: Ctx) -> list[dict]:
    rng = ctx.rng
    topic = tuple(TABLES)[ctx.index % len(TABLES)]
    title, cols, numeric, _ = TABLES[topic]
    rows = table_rows(rng, topic, rng.randint(4, 6))
    media = [ctx.image(draw_table(title, cols, rows, rng.choice(HEADER_FILLS)), colors=16)]
    variant = (ctx.index // len(TABLES)) % 3
    base = dict(cols=", ".join(cols), n=len(rows))
    if variant == 1:
        return [message("user", *media, ctx.t("table_md_q")),
                ctx.reply(markdown_table(cols, rows), "table_md", base)]
    if variant == 2 and topic != "timetable":
        k = 1 + rng.randrange(len(cols) - 1)
        best = max(rows, key=lambda r: int(r[k]))
        return qa(ctx, media, "table_max_q", "table_max_a", "table_max", **base, col=cols[k], row=best[0],
                  value=best[k], listing=listing([(r[0], r[k]) for r in rows], ctx.lang))
    row, k = rng.choice(rows), 1 + rng.randrange(len(cols) - 1)
    return qa(ctx, media, "table_lookup_q", "table_lookup_a", "table_lookup", **base, col=cols[k], row=row[0],
              value=row[k])


# ----------------------------------------------------------------------------------------------------
# Diagrams and STEM figures
# ----------------------------------------------------------------------------------------------------

TRIPLES = ((3, 4, 5), (5, 12, 13), (6, 8, 10), (8, 15, 17), (7, 24, 25), (9, 12, 15), (20, 21, 29), (12, 16, 20))
SIGN_WORDS = {"en": ("positive", "negative"), "zh": ("正", "负")}


def build_diagram(ctx: Ctx) -> list[dict]:
    builders = (geometry_sample, function_sample, block_sample, circuit_sample, molecule_sample)
    return builders[ctx.index % len(builders)](ctx)


def geometry_sample(ctx: Ctx) -> list[dict]:
    if (ctx.index // 5) % 2 == 0:
        a, b, c = ctx.rng.choice(TRIPLES)
        a, b = (b, a) if ctx.rng.random() < 0.5 else (a, b)
        img = draw_right_triangle(a, b, "см" if ctx.lang == "ru" else "cm")
        return qa(ctx, [ctx.image(img, colors=8)], "tri_q", "tri_a", "tri", a=a, b=b, c=c, a2=a * a, b2=b * b,
                  s=c * c)
    w, h = ctx.rng.sample(range(2, 16), 2)
    img = draw_rectangle(w, h, "см" if ctx.lang == "ru" else "cm", ctx.rng.choice(PASTELS))
    return qa(ctx, [ctx.image(img, colors=8)], "rect_q", "rect_a", "rect", w=w, h=h, area=w * h, per=2 * (w + h))


def draw_right_triangle(a: int, b: int, unit: str) -> Image.Image:
    img = Image.new("RGB", (384, 320), "white")
    draw = ImageDraw.Draw(img)
    scale = min(260 / a, 220 / b)
    A = (70, 270)
    B, C = (70 + a * scale, 270), (70, 270 - b * scale)
    draw.polygon([A, B, C], outline=INK, width=3)
    draw.rectangle((A[0], A[1] - 16, A[0] + 16, A[1]), outline=INK, width=2)
    label = font(16)
    centered_text(draw, ((A[0] + B[0]) / 2, A[1] + 20), f"{a} {unit}", label)
    centered_text(draw, (A[0] - 36, (A[1] + C[1]) / 2), f"{b} {unit}", label)
    centered_text(draw, ((B[0] + C[0]) / 2 + 18, (B[1] + C[1]) / 2 - 14), "x", font(20, "serif_italic"))
    return img


def draw_rectangle(w: int, h: int, unit: str, fill) -> Image.Image:
    img = Image.new("RGB", (384, 300), "white")
    draw = ImageDraw.Draw(img)
    scale = min(280 / w, 200 / h)
    x0, y0 = (384 - w * scale) / 2 - 20, (300 - h * scale) / 2 - 10
    x1, y1 = x0 + w * scale, y0 + h * scale
    draw.rectangle((x0, y0, x1, y1), fill=fill, outline=INK, width=3)
    centered_text(draw, ((x0 + x1) / 2, y1 + 18), f"{w} {unit}", font(16))
    centered_text(draw, (x1 + 36, (y0 + y1) / 2), f"{h} {unit}", font(16))
    return img


def linear_expr(m: int, c: int) -> str:
    head = {1: "x", -1: "-x"}.get(m, f"{m}x")
    return head + ("" if c == 0 else f" + {c}" if c > 0 else f" - {-c}")


def quadratic_expr(s: int, p: int, q: int) -> str:
    inner = "x²" if p == 0 else (f"(x - {p})²" if p > 0 else f"(x + {-p})²")
    return ("-" if s < 0 else "") + inner + ("" if q == 0 else f" + {q}" if q > 0 else f" - {-q}")


def function_plot(xs, ys, size) -> Image.Image:
    fig, ax = new_plot(size)
    ax.plot(xs, ys, color="#1f77b4", linewidth=2, label="f(x)")
    ax.set_xlim(-5, 5)
    ax.set_ylim(-8, 8)
    ax.set_xticks(range(-5, 6))
    ax.set_yticks(range(-8, 9, 2))
    ax.grid(alpha=0.35)
    for side in ("left", "bottom"):
        ax.spines[side].set_position("zero")
    tidy(ax)
    ax.legend(loc="upper left", fontsize=8)
    return render(fig)


def function_sample(ctx: Ctx) -> list[dict]:
    rng = ctx.rng
    xs = [x / 10 for x in range(-50, 51)]
    size = rng.choice(((384, 320), (416, 336)))
    if (ctx.index // 5) % 2 == 0:
        m, c = rng.choice((-3, -2, -1, 1, 2, 3)), rng.randint(-4, 4)
        img = function_plot(xs, [m * x + c for x in xs], size)
        return qa(ctx, [ctx.image(img)], "lin_q", "lin_a", "lin", m=m, c=c, c1=m + c, expr=linear_expr(m, c))
    s, p, q = rng.choice((1, -1)), rng.randint(-3, 3), rng.randint(-4, 4)
    img = function_plot(xs, [s * (x - p) ** 2 + q for x in xs], size)
    up = s > 0
    fields = dict(p=p, q=q, expr=quadratic_expr(s, p, q), dir=ctx.t("quad_up" if up else "quad_down"))
    if ctx.lang in SIGN_WORDS:
        fields["sign"] = SIGN_WORDS[ctx.lang][0 if up else 1]
    return qa(ctx, [ctx.image(img)], "quad_q", "quad_a", "quad", **fields)


def draw_block_diagram(stages, fill) -> Image.Image:
    box_w, box_h, gap = 200, 38, 26
    img = Image.new("RGB", (320, 40 + len(stages) * (box_h + gap)), "white")
    draw = ImageDraw.Draw(img)
    x0 = (320 - box_w) / 2
    for k, stage in enumerate(stages):
        y = 24 + k * (box_h + gap)
        draw.rounded_rectangle((x0, y, x0 + box_w, y + box_h), radius=8, fill=fill, outline=INK, width=2)
        centered_text(draw, (160, y + box_h / 2), stage, font(14, "bold"))
        if k + 1 < len(stages):
            arrow(draw, (160, y + box_h + 2), (160, y + box_h + gap - 2))
    return img


def block_sample(ctx: Ctx) -> list[dict]:
    stages = ctx.rng.choice(PIPELINES)
    k = ctx.rng.randrange(len(stages) - 1)
    img = draw_block_diagram(stages, ctx.rng.choice(PASTELS[:4]))
    return qa(ctx, [ctx.image(img, colors=16)], "block_q", "block_a", "block", n=len(stages),
              chain=" → ".join(stages), x=stages[k], y=stages[k + 1], k=k + 1)


def zigzag(draw: ImageDraw.ImageDraw, start, end, vertical: bool) -> None:
    (x0, y0), (x1, y1) = start, end
    points = []
    for k in range(9):
        t = k / 8
        wiggle = 0 if k in (0, 8) else (7 if k % 2 else -7)
        points.append((x0 + wiggle, y0 + t * (y1 - y0)) if vertical else (x0 + t * (x1 - x0), y0 + wiggle))
    draw.line(points, fill=INK, width=2)


def draw_circuit(volts: int, resistors: list[int]) -> Image.Image:
    """A series loop: battery on the left, two resistors along the top, a third (if any) down the right."""
    img = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = 80, 60, 300, 250
    draw_battery(draw, left, top, bottom, volts)
    draw.line((left, bottom, right, bottom), fill=INK, width=2)
    segments = split_top(left, right, top, 2)
    if len(resistors) == 3:
        segments.append(((right, top), (right, bottom), True))
    else:
        draw.line((right, top, right, bottom), fill=INK, width=2)
    for k, (value, (start, end, vertical)) in enumerate(zip(resistors, segments)):
        draw_resistor_segment(draw, start, end, vertical, f"R{k + 1} = {value} Ω", font(14))
    return img


def draw_battery(draw: ImageDraw.ImageDraw, x: int, top: int, bottom: int, volts: int) -> None:
    """Long (+) and short (-) plates in the middle of the left wire, with the voltage beside them."""
    mid = (top + bottom) / 2
    draw.line((x, top, x, mid - 12), fill=INK, width=2)
    draw.line((x, mid + 12, x, bottom), fill=INK, width=2)
    draw.line((x - 18, mid - 12, x + 18, mid - 12), fill=INK, width=3)
    draw.line((x - 9, mid + 12, x + 9, mid + 12), fill=INK, width=5)
    draw.text((x - 66, mid - 8), f"{volts} V", font=font(14), fill=INK)


def split_top(left: int, right: int, top: int, parts: int):
    step = (right - left) / parts
    return [((left + k * step, top), (left + (k + 1) * step, top), False) for k in range(parts)]


def draw_resistor_segment(draw, start, end, vertical: bool, text: str, fnt) -> None:
    """A wire with a zigzag resistor in its middle third, labelled beside it."""
    (x0, y0), (x1, y1) = start, end
    a = (x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3)
    b = (x0 + 2 * (x1 - x0) / 3, y0 + 2 * (y1 - y0) / 3)
    draw.line((start, a), fill=INK, width=2)
    zigzag(draw, a, b, vertical)
    draw.line((b, end), fill=INK, width=2)
    if vertical:
        draw.text((x0 + 14, (a[1] + b[1]) / 2 - 8), text, font=fnt, fill=INK)
    else:
        centered_text(draw, ((a[0] + b[0]) / 2, y0 - 22), text, fnt)


def circuit_values(rng: random.Random) -> tuple[int, float, list[int]]:
    options = [(v, i) for v in (6, 9, 12, 18, 24) for i in (0.5, 1, 1.5, 2, 3)
               if (v / i).is_integer() and 4 <= v / i <= 48]
    volts, amps = rng.choice(options)
    total, parts = int(volts / amps), rng.choice((2, 3))
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return volts, amps, [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def circuit_sample(ctx: Ctx) -> list[dict]:
    volts, amps, resistors = circuit_values(ctx.rng)
    img = draw_circuit(volts, resistors)
    return qa(ctx, [ctx.image(img, colors=8)], "circ_q", "circ_a", "circ", V=volts, R=sum(resistors),
              I=num(amps, ctx.lang), sum=" + ".join(map(str, resistors)))


def benzene() -> tuple[list, list]:
    angles = [math.radians(90 + 60 * k) for k in range(6)]
    carbons = [("C", 0.5 + 0.2 * math.cos(a), 0.5 - 0.2 * math.sin(a)) for a in angles]
    hydrogens = [("H", 0.5 + 0.37 * math.cos(a), 0.5 - 0.37 * math.sin(a)) for a in angles]
    ring = [(k, (k + 1) % 6, 2 if k % 2 == 0 else 1) for k in range(6)]
    return carbons + hydrogens, ring + [(k, 6 + k, 1) for k in range(6)]


ATOM_STYLE = {"C": ((80, 80, 80), "white", 16), "O": ((215, 60, 50), "white", 16), "H": ("white", INK, 12)}


def draw_molecule(atoms, bonds, size: int = 336) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    pos = [(x * size, y * size) for _, x, y in atoms]
    for i, j, order in bonds:
        (x0, y0), (x1, y1) = pos[i], pos[j]
        length = math.hypot(x1 - x0, y1 - y0)
        nx, ny = -(y1 - y0) / length, (x1 - x0) / length  # unit normal, to offset double bonds
        for off in ((0,) if order == 1 else (-4, 4)):
            draw.line((x0 + nx * off, y0 + ny * off, x1 + nx * off, y1 + ny * off), fill=INK, width=3)
    for (symbol, _, _), (x, y) in zip(atoms, pos):
        fill, ink, r = ATOM_STYLE[symbol]
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=INK, width=2)
        centered_text(draw, (x, y), symbol, font(14, "bold"), fill=ink)
    return img


def molecule_sample(ctx: Ctx) -> list[dict]:
    key = tuple(MOLECULES)[(ctx.index // 5) % len(MOLECULES)]
    names, formula, atoms, bonds = MOLECULES[key]
    if key == "benzene":
        atoms, bonds = benzene()
    counts = Counter(symbol for symbol, _, _ in atoms)
    fields = dict(name=names[ctx.lang], formula=formula, atoms=len(atoms), bonds=len(bonds))
    if ctx.lang in ATOM_WORDS:
        words = ATOM_WORDS[ctx.lang]
        parts = [f"{counts[s]} {words[s]}" if ctx.lang == "en" else f"{words[s]}{counts[s]}个"
                 for s in sorted(counts)]
        fields["counts"] = join_items(parts, ctx.lang)
    return qa(ctx, [ctx.image(draw_molecule(atoms, bonds), colors=8)], "mol_q", "mol_a", "mol", **fields)


# ----------------------------------------------------------------------------------------------------
# Object scenes with grounding questions, and multi-frame videos
# ----------------------------------------------------------------------------------------------------

SCENE_SIZES = ((448, 336), (416, 312), (384, 288))


@dataclass
class Scene:
    image: Image.Image
    objects: list[tuple[str, str, tuple[int, int, int, int]]]  # colour, shape, pixel box; left to right


def scene_background(rng: random.Random, size) -> Image.Image:
    img = Image.new("RGB", size, rng.choice(PASTELS))
    draw = ImageDraw.Draw(img)
    style = rng.randrange(3)
    if style == 1:  # sky over grass
        draw.rectangle((0, size[1] * 0.62, size[0], size[1]), fill=(200, 230, 190))
    elif style == 2:  # squared paper
        for x in range(0, size[0], 24):
            draw.line((x, 0, x, size[1]), fill=(215, 222, 232))
        for y in range(0, size[1], 24):
            draw.line((0, y, size[0], y), fill=(215, 222, 232))
    return img


def make_scene(rng: random.Random) -> Scene:
    """3-6 shapes of distinct colour/shape pairs, one per column, so 'left to right' is unambiguous."""
    size = rng.choice(SCENE_SIZES)
    img = scene_background(rng, size)
    draw = ImageDraw.Draw(img)
    n, col_w = rng.randint(3, 6), size[0] // 6
    kinds = rng.sample([(c, s) for c in COLORS for s in SHAPES], n)
    objects = []
    for col, (color, shape) in zip(sorted(rng.sample(range(6), n)), kinds):
        side = rng.randint(30, min(col_w - 8, 64))
        x = col * col_w + rng.randint(4, col_w - side - 4)
        box = shape_box(shape, x, rng.randint(10, size[1] - side - 10), side)
        draw_shape(draw, shape, box, COLORS[color])
        objects.append((color, shape, box))
    return Scene(img, objects)


def build_grounding(ctx: Ctx) -> list[dict]:
    scene = make_scene(ctx.rng)
    media = [ctx.image(scene.image)]
    size, lang = scene.image.size, ctx.lang
    labels = [bare_label(lang, c, s) for c, s, _ in scene.objects]
    variant = ctx.index % 3
    if variant == 0:
        color, shape, box = ctx.rng.choice(scene.objects)
        obj = obj_phrase(lang, color, shape)
        return qa(ctx, media, "ground_q", "ground_a", "ground", obj=obj, Obj=cap(obj),
                  box=box_str(norm_box(box, size)), W=size[0], H=size[1], x1=box[0], y1=box[1], x2=box[2], y2=box[3])
    if variant == 1:
        rows = [{"label": label, "bbox_2d": norm_box(box, size)} for label, (_, _, box) in zip(labels, scene.objects)]
        answer = "```json\n[\n" + ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n```"
        fields = dict(n=len(rows), items=join_items(labels, lang))
        return [message("user", *media, ctx.t("detect_q")), ctx.reply(answer, "detect", fields)]
    return qa(ctx, media, "count_q", "count_a", "count", n=len(labels), items=join_items(labels, lang))


MOTIONS = ("right", "left", "down", "up", "grow", "shrink")
VIDEO_FRAMES, VIDEO_SIZE = 4, 224


def motion_boxes(rng: random.Random, motion: str, shape: str) -> list[tuple[int, int, int, int]]:
    """Where the moving shape is in each frame."""
    steps = [k / (VIDEO_FRAMES - 1) for k in range(VIDEO_FRAMES)]
    if motion in ("grow", "shrink"):
        sizes = [round(36 + 90 * t) for t in (steps if motion == "grow" else steps[::-1])]
        return [shape_box(shape, (VIDEO_SIZE - s) // 2, (VIDEO_SIZE - s) // 2, s) for s in sizes]
    side, lane = 44, rng.randint(30, VIDEO_SIZE - 74)
    travel = [round(16 + (VIDEO_SIZE - 32 - side) * t) for t in steps]
    travel = travel[::-1] if motion in ("left", "up") else travel
    horizontal = motion in ("right", "left")
    return [shape_box(shape, p, lane, side) if horizontal else shape_box(shape, lane, p, side) for p in travel]


def build_video(ctx: Ctx) -> list[dict]:
    rng = ctx.rng
    motion = MOTIONS[ctx.index % len(MOTIONS)]
    color, shape = rng.choice(tuple(COLORS)), rng.choice(SHAPES)
    background = rng.choice(PASTELS)
    frames = []
    for box in motion_boxes(rng, motion, shape):
        frame = Image.new("RGB", (VIDEO_SIZE, VIDEO_SIZE), background)
        draw_shape(ImageDraw.Draw(frame), shape, box, COLORS[color])
        frames.append(frame)
    obj = obj_phrase(ctx.lang, color, shape)
    return [message("user", ctx.video(frames), ctx.t("video_q", obj=obj)),
            ctx.reply(ctx.t(f"move_{motion}", obj=obj, Obj=cap(obj)))]


# ----------------------------------------------------------------------------------------------------
# Text only: multi-turn dialogues; reasoning, maths and code
# ----------------------------------------------------------------------------------------------------

def build_dialogue(ctx: Ctx) -> list[dict]:
    builders = (conversion_turns, recipe_turns, translation_turns, knowledge_turns)
    turns = builders[ctx.index % len(builders)](ctx)
    messages = [message("system", ctx.t("system"))] if ctx.index % 3 == 0 else []
    return messages + [message("user" if k % 2 == 0 else "assistant", turn) for k, turn in enumerate(turns)]


def conversion_turns(ctx: Ctx) -> list[str]:
    km = ctx.rng.choice((5, 10, 21, 42, 50, 80, 100, 160, 250))
    celsius = ctx.rng.randrange(-20, 45, 5)
    return [ctx.t("conv_q1", km=km), ctx.t("conv_a1", km=km, mi=num(km / 1.609344, ctx.lang, 1)),
            ctx.t("conv_q2"), ctx.t("conv_a2", km=km, m=km * 1000),
            ctx.t("conv_q3", c=celsius), ctx.t("conv_a3", c=celsius, f=celsius * 9 // 5 + 32)]


def recipe_turns(ctx: Ctx) -> list[str]:
    rng = ctx.rng
    n1 = rng.choice((2, 4))
    n2 = rng.choice((4, 6, 8) if n1 == 2 else (2, 6, 8, 12))
    flour, milk, eggs = rng.choice((200, 250, 300)), rng.choice((300, 400, 500)), rng.choice((2, 4))
    scaled = dict(flour2=flour * n2 // n1, milk2=milk * n2 // n1, eggs2=eggs * n2 // n1)
    fields = dict(n1=n1, n2=n2, flour=flour, milk=milk, eggs=eggs, **scaled)
    return [ctx.t("rec_q1", **fields), ctx.t("rec_a1", **fields), ctx.t("rec_q2"), ctx.t("rec_a2")]


def translation_turns(ctx: Ctx) -> list[str]:
    sentence = ctx.rng.choice(PARALLEL)
    first, second = ctx.rng.sample([lang for lang in LANGS if lang != ctx.lang], 2)
    names = LANG_NAMES[ctx.lang]
    return [ctx.t("tr_q1", target=names[first], text=sentence[ctx.lang]), sentence[first],
            ctx.t("tr_q2", target=names[second]), sentence[second]]


def knowledge_turns(ctx: Ctx) -> list[str]:
    return list(ctx.rng.choice(KNOWLEDGE[ctx.lang]))


def build_reasoning(ctx: Ctx) -> list[dict]:
    builders = (train_problem, discount_problem, equation_problem, code_task, code_output, sql_task)
    return builders[ctx.index % len(builders)](ctx)


def train_problem(ctx: Ctx) -> list[dict]:
    v = ctx.rng.choice((60, 72, 80, 90, 120))
    t, t2 = ctx.rng.sample(range(2, 8), 2)
    return qa(ctx, [], "train_q", "train_a", "train", v=v, t=t, t2=t2, d=v * t, d2=v * t2)


def discount_problem(ctx: Ctx) -> list[dict]:
    # Prices in multiples of 40 and these rates keep every intermediate value exact to 2 decimals.
    p = ctx.rng.choice((80, 120, 160, 200, 240, 360))
    r1, r2 = ctx.rng.choice((10, 20, 25, 30, 40)), ctx.rng.choice((10, 20))
    f1, f2 = (100 - r1) / 100, (100 - r2) / 100
    lang = ctx.lang
    fields = dict(p=p, r1=r1, r2=r2, f1=num(f1, lang), f2=num(f2, lang), f=num(f1 * f2, lang, 4),
                  p1=num(p * f1, lang), p2=num(p * f1 * f2, lang), tot=num(100 - 100 * f1 * f2, lang),
                  naive=r1 + r2)
    return qa(ctx, [], "disc_q", "disc_a", "disc", **fields)


def equation_problem(ctx: Ctx) -> list[dict]:
    a, x, b = ctx.rng.randint(2, 9), ctx.rng.randint(2, 12), ctx.rng.randint(1, 30)
    return qa(ctx, [], "eq_q", "eq_a", "eq", a=a, x=x, b=b, c=a * x + b, cb=a * x)


def code_task(ctx: Ctx) -> list[dict]:
    name, descriptions, plans, code = ctx.rng.choice(CODE_TASKS)
    fields = dict(name=name, code=code, plan=plans.get(ctx.lang, ""))
    return [message("user", ctx.t("code_q", name=name, desc=descriptions[ctx.lang])),
            ctx.reply(ctx.t("code_a", code=code), "code", fields)]


def code_output(ctx: Ctx) -> list[dict]:
    rng = ctx.rng
    a, k = rng.randint(1, 10), rng.choice((2, 3, 4, 5))
    b = a + rng.randint(9, 20)
    terms = [i for i in range(a, b) if i % k == 0]
    code = f"total = 0\nfor i in range({a}, {b}):\n    if i % {k} == 0:\n        total += i\nprint(total)"
    fields = dict(a=a, b=b, b1=b - 1, k=k, total=sum(terms), terms=" + ".join(map(str, terms)))
    question = ctx.t("out_q") + f"\n\n```python\n{code}\n```"
    think = dict(fields, terms=", ".join(map(str, terms)))
    return [message("user", question), ctx.reply(ctx.t("out_a", **fields), "out", think)]


def sql_task(ctx: Ctx) -> list[dict]:
    n = ctx.rng.choice((3, 5, 10))
    query = ("SELECT customer_id, SUM(amount) AS total\nFROM orders\nGROUP BY customer_id\n"
             f"ORDER BY total DESC\nLIMIT {n};")
    answer = ctx.t("sql_a", n=n) + f"\n\n```sql\n{query}\n```"
    return [message("user", ctx.t("sql_q", n=n)), ctx.reply(answer, "sql", dict(n=n))]


# ----------------------------------------------------------------------------------------------------
# The set: kinds, sizes, writing, statistics
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    name: str
    count: int
    build: Callable[[Ctx], list[dict]]
    thinking: bool  # some of its English/Chinese samples use the Thinking format


KINDS = (
    Kind("chart", 36, build_chart, True),
    Kind("document", 27, build_document, False),
    Kind("table", 20, build_table, True),
    Kind("diagram", 30, build_diagram, True),
    Kind("grounding", 30, build_grounding, True),
    Kind("video", 12, build_video, False),
    Kind("multi_image", 6, build_multi_image, True),
    Kind("dialogue", 24, build_dialogue, False),
    Kind("reasoning", 30, build_reasoning, True),
)


def build_sample(kind: Kind, kind_index: int, i: int) -> tuple[dict, dict[str, bytes]]:
    sid = f"{kind.name}-{i:03d}"
    rng = random.Random(f"quantkit-calibration/{sid}")  # str seeds hash with SHA-512: stable everywhere
    lang = LANG_CYCLE[(i + kind_index) % len(LANG_CYCLE)]
    thinking = rng.random() < THINKING_SHARE and kind.thinking and lang in THINKING_LANGS
    ctx = Ctx(sid, i, lang, thinking, rng)
    messages = kind.build(ctx)
    record = {"id": sid, "kind": kind.name, "lang": lang, "thinking": thinking, "messages": messages}
    return record, ctx.files


def generate(kinds: set[str] | None = None) -> tuple[list[dict], dict[str, bytes]]:
    """All samples (or those of ``kinds``) as JSONL records, and their pictures by relative path."""
    records, files = [], {}
    with matplotlib.rc_context(PLOT_STYLE):
        for kind_index, kind in enumerate(KINDS):
            if kinds and kind.name not in kinds:
                continue
            for i in range(kind.count):
                record, sample_files = build_sample(kind, kind_index, i)
                records.append(record)
                files.update(sample_files)
    return records, files


def write_set(out: Path, records: list[dict], files: dict[str, bytes]) -> None:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for stale in images.glob("*.png"):  # a rerun must not leave pictures of removed samples behind
        stale.unlink()
    for rel, data in files.items():
        (out / rel).write_bytes(data)
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    (out / "samples.jsonl").write_bytes("".join(lines).encode("utf-8"))
    manifest = {"generator": "calibration/make_default_set.py", "versions": library_versions(),
                "samples": len(records), "files": len(files)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def library_versions() -> dict[str, str]:
    """The versions that decide the image bytes: a regeneration elsewhere matches only with these."""
    import PIL
    from PIL import features
    return {"pillow": PIL.__version__, "freetype": features.version("freetype2") or "",
            "matplotlib": matplotlib.__version__, "zlib": features.version("zlib") or ""}


# ---- statistics for the README ----------------------------------------------------------------------

def smart_resize(h: int, w: int, min_pixels: int, max_pixels: int, factor: int = 28) -> tuple[int, int]:
    # Same rounding as transformers' ernie4_5_vl_moe smart_resize.
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def real_vision_tokens(size: tuple[int, int], frames: int = 0) -> int:
    """Vision-expert tokens of one image (frames=0) or video in the real model, start/end markers included."""
    w, h = size
    pixels = REAL_VIDEO_PIXELS if frames else REAL_IMAGE_PIXELS
    hb, wb = smart_resize(h, w, *pixels)
    groups = (frames + 1) // 2 if frames else 1  # video frames are merged in pairs
    return groups * (hb // 28) * (wb // 28) + 2


def estimated_text_tokens(text: str) -> int:
    """A low estimate for ERNIE's 103k vocabulary: ~1.5 CJK characters or ~4 other characters per token."""
    cjk = sum(1 for ch in text if "\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef")
    return math.ceil(cjk / 1.5 + (len(text) - cjk) / 4)


def sample_tokens(record: dict, sizes: dict[str, tuple[int, int]]) -> tuple[int, int]:
    text, vision = 1, 0  # <|begin_of_sentence|>
    for msg in record["messages"]:
        text += 4  # role prefix and end-of-turn marker
        for item in msg["content"]:
            if item["type"] == "text":
                text += estimated_text_tokens(item["text"])
            elif item["type"] == "image":
                text, vision = text + 3, vision + real_vision_tokens(sizes[item["image"]])
            else:
                text, vision = text + 3, vision + real_vision_tokens(sizes[item["video"][0]], len(item["video"]))
    return text, vision


def stats(records: list[dict], files: dict[str, bytes]) -> dict:
    sizes = {rel: Image.open(io.BytesIO(data)).size for rel, data in files.items()}
    tokens = [sample_tokens(r, sizes) for r in records]
    text, vision = sum(t for t, _ in tokens), sum(v for _, v in tokens)
    with_media = sum(1 for r in records if any(i["type"] != "text" for m in r["messages"] for i in m["content"]))
    jsonl_bytes = sum(len(json.dumps(r, ensure_ascii=False).encode()) + 1 for r in records)
    return {
        "samples": len(records), "with_images": with_media, "thinking": sum(r["thinking"] for r in records),
        "by_kind": dict(Counter(r["kind"] for r in records)), "by_lang": dict(Counter(r["lang"] for r in records)),
        "image_files": len(files), "bytes": jsonl_bytes + sum(len(d) for d in files.values()),
        "text_tokens": text, "vision_tokens": vision,
        "text_tokens_per_expert": round(REAL_TOP_K * text / REAL_EXPERTS),
        "vision_tokens_per_expert": round(REAL_TOP_K * vision / REAL_EXPERTS),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    parser.add_argument("--kinds", help="comma-separated subset of: " + ", ".join(k.name for k in KINDS))
    parser.add_argument("--stats", action="store_true", help="print counts and real-model token estimates")
    args = parser.parse_args(argv)
    kinds = set(args.kinds.split(",")) if args.kinds else None
    unknown = (kinds or set()) - {k.name for k in KINDS}
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    records, files = generate(kinds)
    write_set(args.out, records, files)
    print(f"wrote {len(records)} samples and {len(files)} images to {args.out}")
    if args.stats:
        print(json.dumps(stats(records, files), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
